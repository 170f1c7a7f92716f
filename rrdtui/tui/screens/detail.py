"""One run: live curves (losses, accuracy, similarity, RRD entropies), its configuration and events,
the tail of its log; stop, resume and remove with confirmation."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import yaml
from rich.console import Group
from rich.syntax import Syntax
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane, Tabs

from rrdtui.config import world_summary
from rrdtui.plotting import Curve, Figure, Ref
from rrdtui.ownership import RESUMABLE
from rrdtui.runfilter import run_note, run_tags
from rrdtui.tui.model import (
    LOSS_PREFIXES,
    STATUS_STYLES,
    LogTail,
    Series,
    fmt_duration,
    fmt_num,
    fmt_time,
    loss_label,
    loss_series,
    new_series,
    open_store,
    paper_label,
    paper_number,
    read_increments,
    uses_tau,
)
from rrdtui.tui.screens.confirm import ConfirmScreen
from rrdtui.tui.widgets.curves import CurvePlot
from rrdtui.tui.widgets.wraplog import WrapLog

# plot id -> (title, y label, metrics drawn); the two loss plots draw whatever losses the run has.
PLOTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "p-loss": ("loss terms", "", ()),
    "p-first": ("first stage", "", ()),
    "p-lr": ("learning rate", "", ("train/lr",)),
    "p-acc": ("accuracy %", "", ("train/acc", "val/acc")),
    "p-agree": ("top-1 agreement with the teacher %", "", ("sim/agreement",)),
    "p-kl": ("KL(teacher || student), T=1", "", ("sim/kl",)),
    "p-feat": ("feature similarity (probe set)", "", ("sim/cka", "sim/relation_corr", "sim/logit_corr_diff")),
    "p-ent": ("RRD entropies", "nats", ("rrd/entropy_t", "rrd/entropy_s")),
}  # fmt: skip
LABELS = {
    "train/lr": "lr", "train/acc": "train", "val/acc": "val",
    "sim/agreement": "agreement", "sim/cka": "CKA", "sim/relation_corr": "relation corr",
    "sim/kl": "KL", "sim/logit_corr_diff": "|Δ class logit corr|",
    "rrd/entropy_t": "H(p_T) teacher", "rrd/entropy_s": "H(p_S) student",
}  # fmt: skip
TABS = ("loss", "acc", "out", "feat", "ent", "info", "log")
TAB_NAMES = {"loss": "Loss", "acc": "Accuracy", "out": "Outputs", "feat": "Features", "ent": "Entropy", "info": "Info",
             "log": "Log"}  # fmt: skip
ACTIVE = ("running", "queued")


class DetailLoaded(Message):
    def __init__(self, run: dict[str, Any] | None, points: dict, resets: set, log_reset: bool,
                 log_lines: list[str], events: list[dict], error: str | None = None,
                 tags: list[str] | None = None, note: str = ""):  # fmt: skip
        super().__init__()
        self.run = run
        self.tags = tags or []
        self.note = note
        self.points = points
        self.resets = resets
        self.log_reset = log_reset
        self.log_lines = log_lines
        self.events = events
        self.error = error


class ActionDone(Message):
    def __init__(self, what: str, info: str | None, error: str | None):
        super().__init__()
        self.what = what
        self.info = info
        self.error = error


class DetailScreen(Screen):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("s", "smooth", "Smooth"),
        Binding("x", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("d", "remove", "Remove"),
        Binding("t", "notes", "Tags", show=False),  # listed by ?: the footer is full at 80 columns
        Binding("delete", "remove", "Remove", show=False),
        Binding("ctrl+r", "refresh", "Refresh", show=False),
        *[Binding(str(i + 1), f"tab('{tab}')", f"{TAB_NAMES[tab]} tab", show=False) for i, tab in enumerate(TABS)],
    ]

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id
        self.run: dict[str, Any] | None = None
        self.series: dict[str, Series] = {}
        self.events: list[dict] = []
        self.tags: list[str] = []  # the run's artifacts "tags" and "note"
        self.note = ""
        self.smoothing = False
        self.loaded = False
        self.load_count = 0
        self._polling = False
        self._tail: LogTail | None = None  # used by the worker only
        self._config_shown = False
        self._removed = False
        self._leaving = False

    def compose(self) -> ComposeResult:
        yield Static(id="detail-head")
        with TabbedContent(id="detail-tabs"):
            with TabPane("1 Loss", id="loss"):
                with Horizontal():
                    yield CurvePlot(id="p-loss")
                    first = CurvePlot(id="p-first")
                    first.display = False  # shown when the run has a first stage
                    yield first
                    yield CurvePlot(id="p-lr")
            with TabPane("2 Accuracy", id="acc"):
                yield CurvePlot(id="p-acc")
            with TabPane("3 Outputs", id="out"):
                with Horizontal():
                    yield CurvePlot(id="p-agree")
                    yield CurvePlot(id="p-kl")
            with TabPane("4 Features", id="feat"):
                yield CurvePlot(id="p-feat")
            with TabPane("5 Entropy", id="ent"):
                with Vertical():
                    yield CurvePlot(id="p-ent")
                    yield Static(id="ent-caption")
            with TabPane("6 Info", id="info"):
                with VerticalScroll():
                    yield Static(id="info-text")
            with TabPane("7 Log", id="log"):
                yield WrapLog(id="log-view", max_lines=5000)
        yield Footer()

    def on_mount(self) -> None:
        for plot_id, (title, ylabel, _) in PLOTS.items():
            self.query_one(f"#{plot_id}", CurvePlot).figure = Figure(title=title, ylabel=ylabel)
        self._timer = self.set_interval(self.app.poll_interval, self.poll)
        self._draw_head()
        self.poll()

    def on_resize(self) -> None:
        self.query_one("#p-lr").display = self.size.width >= 110

    def on_screen_suspend(self) -> None:
        self._timer.pause()

    def on_screen_resume(self) -> None:
        self._timer.resume()
        self.poll()

    # -- reading ------------------------------------------------------------------------------

    def poll(self) -> None:
        if self._polling:
            return
        self._polling = True
        last_steps = {name: s.last_step for name, s in self.series.items()}
        self._read(self.app.runs_dir, last_steps, len(self.events))

    @work(thread=True, exit_on_error=False, group="detail-poll")
    def _read(self, runs_dir: Path, last_steps: dict[str, int], n_events: int) -> None:
        try:
            with open_store(runs_dir) as store:
                run = store.get_run(self.run_id)
                if run is None:
                    self.post_message(DetailLoaded(None, {}, set(), False, [], []))
                    return
                points, resets = read_increments(store, self.run_id, None, last_steps)
                events = store.events(self.run_id)
                tags, note = run_tags(store, self.run_id), run_note(store, self.run_id) or ""
            if self._tail is None and run.get("run_dir"):
                self._tail = LogTail(Path(run["run_dir"]) / "train.log")
            log_reset, lines = self._tail.read() if self._tail else (False, [])
        except Exception as exc:
            self.post_message(DetailLoaded(self.run, {}, set(), False, [], [], error=f"cannot read the store: {exc}"))
            return
        self.post_message(DetailLoaded(run, points, resets, log_reset, lines, events, tags=tags, note=note))

    def on_detail_loaded(self, message: DetailLoaded) -> None:
        self._polling = False
        if message.error:
            self.notify(message.error, severity="error")
            return
        if message.run is None:
            if not self._removed:
                self.notify(f"run {self.run_id} is no longer in the store", severity="warning")
            self._leave()
            return
        status_changed = self.run is None or self.run.get("status") != message.run.get("status")
        self.run = message.run
        for name in message.resets:
            self.series[name] = new_series()
        for name, rows in message.points.items():
            self.series.setdefault(name, new_series()).extend(rows)
        if message.points or message.resets or not self.loaded:
            self._draw_plots()
        if message.log_reset:
            self.query_one(WrapLog).clear()
        if message.log_lines:
            self.query_one(WrapLog).write_lines(message.log_lines)
        notes_changed = (message.tags, message.note) != (self.tags, self.note)
        self.tags, self.note = message.tags, message.note
        if len(message.events) != len(self.events) or status_changed or notes_changed or not self._config_shown:
            self.events = message.events
            self._draw_info()
        self._draw_head()
        self.loaded = True
        self.load_count += 1

    # -- drawing ------------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        import json

        try:
            return json.loads((self.run or {}).get("config") or "{}")
        except ValueError:
            return {}

    def _last(self, name: str) -> float | None:
        s = self.series.get(name)
        return s.values[-1] if s and s.values else None

    def _best_acc(self) -> float | None:
        if self.run and self.run.get("best_acc") is not None:
            return self.run["best_acc"]
        s = self.series.get("val/acc")
        values = [v for v in (s.values if s else []) if math.isfinite(v)]
        return max(values) if values else None

    def _teacher_acc(self) -> float | None:
        if self.run and self.run.get("teacher_acc") is not None:
            return self.run["teacher_acc"]
        return self._last("teacher/val_acc")

    def _draw_head(self) -> None:
        head = self.query_one("#detail-head", Static)
        run = self.run
        if run is None:
            head.update(f"[b]{self.run_id}[/b]  loading…")
            return
        config = self._config()
        method = run.get("method") or ""
        status = run.get("status") or ""
        line1 = Text.assemble(
            (run["id"], "bold"), "  ", (run.get("name") or "", "bold"), "  ",
            (f" {status} ", STATUS_STYLES.get(status) or "reverse"), "  ",
            f"epoch {run.get('epoch') or 0}/{run.get('epochs') or 0}",
        )  # fmt: skip
        if self.tags:
            line1.append("  " + " ".join(self.tags), style="cyan")
        if status == "running" and run.get("started") and run.get("total_steps"):
            frac = (run.get("step") or 0) / run["total_steps"]
            if frac > 0:
                left = (self.app.clock() - run["started"]) * (1 - frac) / frac
                line1.append(f" · {fmt_duration(left)} left")
        pair = (
            f"{run.get('teacher_arch')}→{run.get('student_arch')}"
            if run.get("teacher_arch")
            else run.get("student_arch")
        )
        m = config.get("method") or {}
        parts = [method, pair or "", run.get("data") or ""]
        if uses_tau(method) and m.get("tau_s") is not None:
            parts.append(f"τs {m.get('tau_s'):g}  τt {m.get('tau_t'):g}")
        line2 = Text("  ".join(p for p in parts if p))
        line3 = Text(f"best {fmt_num(self._best_acc())}  last {fmt_num(self._last('val/acc'))}")
        number = paper_number(config.get("paper"), method)
        if number is not None:
            line3.append(f"  paper {paper_label(method)} {number:.2f}")
        teacher = self._teacher_acc()
        if teacher is not None and method != "none":
            line3.append(f"  teacher {teacher:.2f}")
        if self.smoothing:
            line3.append("  (smoothed)", style="dim")
        lines = [line1, line2, line3]
        if self.note:
            lines.append(Text(f"note: {self.note}", style="italic"))
        from rrdtui.store import teacher_check_warning  # loaded by the reader by now: not at start-up

        check = teacher_check_warning(self.events)
        if check:
            lines.append(Text(check, style="yellow"))
        if run.get("error") and status not in ACTIVE:
            lines.append(Text(run["error"].splitlines()[0], style="red"))
        head.update(Text("\n").join(lines))

    def _figure(self, plot_id: str, title: str | None = None, names: list[str] | None = None) -> Figure:
        base_title, ylabel, plot_names = PLOTS[plot_id]
        curves = []
        for name in plot_names if names is None else names:
            s = self.series.get(name)
            if s and s.values:
                label = loss_label(name) if name.startswith(LOSS_PREFIXES) else LABELS.get(name, name)
                curves.append(Curve(label, s.epochs, s.values))
        return Figure(curves=curves, title=title or base_title, ylabel=ylabel)

    def _draw_plots(self) -> None:
        config = self._config()
        method = (self.run or {}).get("method") or ""
        for plot_id in ("p-lr", "p-agree", "p-kl", "p-feat"):
            self.query_one(f"#{plot_id}", CurvePlot).show(self._figure(plot_id))
        # Every loss the store has for the run: train/loss, each train/loss_<term>, val/loss; and the
        # first stage's first/loss_<term> in a plot of their own (negative epochs, another scale).
        names = [name for name, s in self.series.items() if s.values]
        main, first = loss_series(names, method)
        self.query_one("#p-loss", CurvePlot).show(self._figure("p-loss", names=main))
        first_plot = self.query_one("#p-first", CurvePlot)
        first_plot.display = bool(first)
        if first:
            first_plot.show(self._figure("p-first", names=first))
        acc = self._figure("p-acc")
        teacher = self._teacher_acc()
        if teacher is not None and method != "none":
            acc.refs.append(Ref(f"teacher {teacher:.2f}", teacher))
        number = paper_number(config.get("paper"), method)
        if number is not None:
            acc.refs.append(Ref(f"paper {paper_label(method)} {number:.2f}", number))
        self.query_one("#p-acc", CurvePlot).show(acc)
        m = config.get("method") or {}
        caption = self.query_one("#ent-caption", Static)
        if uses_tau(method) and m.get("tau_s") is not None:
            tau_s, tau_t = m.get("tau_s"), m.get("tau_t")
            sharper = "student" if tau_s < tau_t else "teacher" if tau_t < tau_s else "neither"
            self.query_one("#p-ent", CurvePlot).show(
                self._figure("p-ent", f"RRD entropies  τs={tau_s:g}  τt={tau_t:g}")
            )
            caption.update(
                f"Entropy of the relational distributions over the queue: lower is sharper. "
                f"τs={tau_s:g} vs τt={tau_t:g}: the {sharper} side is set sharper"
                + (" (the published setting)." if (tau_s, tau_t) == (0.04, 0.1) else ".")
            )
        else:
            self.query_one("#p-ent", CurvePlot).show(self._figure("p-ent"))
            caption.update(f"[dim]method {method or '?'} has no RRD temperatures (τs, τt): nothing to show.[/]")

    def _draw_info(self) -> None:
        run = self.run or {}
        self._config_shown = True
        rows = [
            ("id", run.get("id")), ("name", run.get("name")), ("status", run.get("status")),
            ("error", run.get("error")), ("tags", " ".join(self.tags)), ("note", self.note),
            ("preset", run.get("preset")), ("group", run.get("grp")),
            ("created", fmt_time(run.get("created"))), ("started", fmt_time(run.get("started"))),
            ("ended", fmt_time(run.get("ended"))), ("pid", f"{run.get('pid') or '-'} on {run.get('host') or '-'}"),
            ("run dir", run.get("run_dir")), ("scale", world_summary(self._config())),
        ]  # fmt: skip
        facts = Text("\n").join(
            Text.assemble((f"{key:>8} ", "dim"), (str(value), "red" if key == "error" else ""))
            for key, value in rows
            if value not in (None, "", "-")
        )
        events = [Text("events", style="bold")]
        for ev in self.events[-20:]:
            style = {"error": "red", "warning": "yellow"}.get(ev.get("level"), "")
            events.append(
                Text(f"  {fmt_time(ev.get('time'))} {ev.get('level', ''):7} {ev.get('message', '')}", style=style)
            )
        if not self.events:
            events.append(Text("  none", style="dim"))
        config_text = yaml.safe_dump(self._config(), sort_keys=False, default_flow_style=None, width=10_000)
        syntax = Syntax(config_text.rstrip(), "yaml", theme="ansi_dark", background_color="default", word_wrap=True)
        self.query_one("#info-text", Static).update(
            Group(
                facts, Text(""), Text("\n").join(events), Text(""), Text("resolved configuration", style="bold"), syntax
            )
        )

    # -- actions ------------------------------------------------------------------------------

    def refusal(self, what: str) -> str | None:
        """Why `what` (stop, resume, remove) cannot be done to this run as it is now; None if it can.
        The keys always answer: a key that did nothing would leave the user guessing."""
        status = (self.run or {}).get("status")
        run = f"run {self.run_id}"
        if status is None:
            return f"{run} is still loading"
        if what == "stop" and status not in ACTIVE:
            return f"{run} is {status}: nothing to stop"
        if what == "resume" and status not in RESUMABLE:
            if status == "completed" or status in ACTIVE:
                return f"{run} is {status}: nothing to resume"
            return f"{run} is {status}: only a stopped, crashed or failed run resumes"
        if what == "remove" and status in ACTIVE:
            return f"{run} is {status}: stop it first (x)"
        return None

    def action_back(self) -> None:
        self._leave()

    def _leave(self) -> None:
        """Back to the runs (once: a removal and the poll that notices it may both ask)."""
        if self._leaving or self.app.screen is not self:
            return  # leaving already, or a modal is above: the poll after it closes comes back here
        self._leaving = True
        self._timer.stop()
        self.dismiss(None)

    def action_refresh(self) -> None:
        self.poll()

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        # Where the arrows and page keys should go: the text that scrolls, or the tab bar.
        if tab == "info":
            self.query_one("#info", TabPane).query_one(VerticalScroll).focus()
        elif tab == "log":
            self.query_one(WrapLog).focus()
        else:
            self.query_one(TabbedContent).query_one(Tabs).focus()

    def action_notes(self) -> None:
        self.app.edit_notes(self.run_id, self.tags, self.note)

    def action_smooth(self) -> None:
        self.smoothing = not self.smoothing
        for plot in self.query(CurvePlot):
            plot.smoothing = self.smoothing
        self.notify(f"smoothing {'on' if self.smoothing else 'off'}", timeout=1.5)

    def action_stop(self) -> None:
        self._confirm("stop", f"Stop run {self.run_id}? It finishes its current step and saves a checkpoint.", "Stop")

    def action_resume(self) -> None:
        self._confirm("resume", f"Resume run {self.run_id} from its last checkpoint (detached)?", "Resume")

    def action_remove(self) -> None:
        self._confirm("remove", f"Remove run {self.run_id}: its metrics, events and its folder? This cannot be undone.", "Remove")  # fmt: skip

    def _confirm(self, what: str, question: str, yes: str) -> None:
        refusal = self.refusal(what)
        if refusal:
            self.notify(refusal, severity="warning")
            return

        def answered(ok: bool | None) -> None:
            if ok:
                self._act(what, self.app.runs_dir)

        self.app.push_screen(ConfirmScreen(question, yes), callback=answered)

    @work(thread=True, exit_on_error=False, group="detail-action")
    def _act(self, what: str, runs_dir: Path) -> None:
        try:
            from rrdtui import launcher

            with open_store(runs_dir) as store:
                if what == "stop":
                    launcher.request_stop(store, self.run_id)
                    info = f"stop requested for {self.run_id}"
                elif what == "resume":
                    launcher.resume(store, self.run_id, detach=True)
                    info = f"resumed {self.run_id}"
                else:
                    run = store.get_run(self.run_id)
                    if run is not None and run.get("status") in ACTIVE:
                        raise RuntimeError(f"run {self.run_id} is {run['status']}: stop it first")
                    store.delete_run(self.run_id)
                    folder = Path(run["run_dir"]) if run and run.get("run_dir") else None
                    if folder and folder.name == self.run_id and folder.resolve().parent == Path(runs_dir).resolve():
                        shutil.rmtree(folder, ignore_errors=True)
                    info = f"removed {self.run_id}"
        except Exception as exc:
            self.post_message(ActionDone(what, None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
            return
        self.post_message(ActionDone(what, info, None))

    def on_action_done(self, message: ActionDone) -> None:
        if message.error:
            self.notify(f"{message.what} failed: {message.error}", severity="error", timeout=8)
            return
        self.notify(message.info or message.what)
        if message.what == "remove":
            self._removed = True
            self._leave()
        else:
            self.poll()
