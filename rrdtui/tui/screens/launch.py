"""Launch: pick a preset, edit the fields that matter, see the teacher it will use, launch detached,
or save the edits as a new preset. Validation is the CLI's own: the edits become `--set` overrides
and go through `load_preset` as you type, then through the checks `rrdtui run` makes before it
writes a run row (`rrdtui.preflight.check_launch`: device, data, teacher file, method pairing), in a
thread, so every message reads exactly as `rrdtui run` prints it."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from rrdtui.catalog import DATASETS
from rrdtui.registry import MethodInfo, short_citation, weights_text
from rrdtui.registry import methods as registered_methods
from rrdtui.config import Config, ConfigError, apply_overrides, load_preset, read_yaml
from rrdtui.tui.model import open_store

# (key path, label); method.name and data.name are choices, the rest free text parsed as YAML.
FIELDS = (
    ("method.name", "method"), ("data.name", "data"),
    ("method.tau_s", "tau_s"), ("method.tau_t", "tau_t"),
    ("method.alpha", "alpha"), ("method.beta", "beta"),
    ("method.gamma", "gamma"), ("method.kd_T", "kd_T"),
    ("train.epochs", "epochs"), ("optim.lr", "lr"),
    ("train.batch_size", "batch"), ("seed", "seed"),
)  # fmt: skip
WEIGHTS = ("method.alpha", "method.beta", "method.gamma")
OPTION_SLOTS = 4  # method.options.<key> fields shown (two rows); a method with more lists the rest
PRESET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# The preset list is as wide as its longest name, on one line each, as long as the form keeps FORM_MIN
# columns (a narrower terminal clips the longest names with "…"); never narrower than LIST_MIN.
FORM_MIN = 44
LIST_MIN = 20


def field_id(key: str) -> str:
    return "f-" + key.replace(".", "-")


def choices() -> dict[str, tuple[str, ...]]:
    """The values of the choice fields, read when a screen is made: a method registered at run time
    (rrdtui.registry.register) is offered."""
    return {"method.name": tuple(registered_methods()), "data.name": DATASETS}


def _get(mapping: dict[str, Any], key: str) -> Any:
    node: Any = mapping
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _text(value: Any) -> str:
    """A value as the user would type it after --set (round-trips through YAML)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exp = text.partition("e")
        if e and "." not in mantissa:
            text = f"{mantissa}.0e{exp}"
        return text
    return str(value)


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def list_presets(presets_dir: Path) -> list[Path]:
    if not presets_dir.is_dir():
        return []
    return sorted(p for p in presets_dir.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


class PlanReady(Message):
    def __init__(self, seq: int, text: str):
        super().__init__()
        self.seq = seq
        self.text = text


class Checked(Message):
    """The launch checks of the inputs numbered `seq` are done: `error` is their one line, or None."""

    def __init__(self, seq: int, error: str | None):
        super().__init__()
        self.seq = seq
        self.error = error


class Launched(Message):
    def __init__(self, ids: list[str] | None, error: str | None):
        super().__init__()
        self.ids = ids
        self.error = error


class LaunchScreen(Screen[list[str] | None]):
    DEFAULT_CSS = """
    #method-info {
        height: auto;
        max-height: 3;
        margin-top: 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    #launch-options {
        grid-size: 4;
        grid-columns: 11 1fr 11 1fr;
        grid-rows: 1;
        grid-gutter: 0 1;
        height: auto;
    }
    """
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+l", "launch", "Launch"),
        Binding("ctrl+s", "save", "Save preset"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.presets: list[Path] = []
        self.preset: Path | None = None
        self.raw: dict[str, Any] = {}
        self.initial: dict[str, str] = {}
        self.cfg: Config | None = None
        self.error: str | None = None  # the configuration's error (load_preset)
        self.plan = ""
        self.checking = False  # the launch checks of the current inputs have not answered yet
        self.check_error: str | None = None  # what they answered (None: passed, or not answered)
        self.launching = False
        self._seq = 0  # numbers the inputs: a change makes a new number
        self._check_started = 0  # the inputs the last check started on (at most one check runs)
        self._check_running = False
        self._check_timer = None
        self.choices = choices()
        self.option_keys: tuple[str, ...] = ()  # method.options.<key> in the option fields, in order
        self.option_initial: dict[str, str] = {}  # what the preset sets for them ("" for the default)
        self._shown_method: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("[b]Launch a run[/b]  pick a preset, edit, ctrl+l to launch (detached)", id="launch-title")
        with Horizontal(id="launch-main"):
            yield OptionList(id="presets")
            with Vertical(id="launch-right"):
                yield Static(id="preset-desc")
                with Grid(id="launch-form"):
                    for key, label in FIELDS:
                        yield Label(label, classes="field-label")
                        if key in self.choices:
                            yield Select([(c, c) for c in self.choices[key]], id=field_id(key), compact=True,
                                         allow_blank=True, prompt="?")  # fmt: skip
                        else:
                            yield Input(id=field_id(key), compact=True)
                yield Static(id="method-info")
                with Grid(id="launch-options"):
                    for i in range(OPTION_SLOTS):
                        yield Label("", id=f"option-label-{i}", classes="field-label")
                        yield Input(id=f"f-option-{i}", compact=True)
                yield Static(id="plan")
                yield Static(id="verdict")
                with Horizontal(id="launch-actions"):
                    yield Input(placeholder="new preset name", id="save-name", compact=True)
                    yield Button("Save (^s)", id="save", compact=True)
                    yield Button("Launch (^l)", id="launch", variant="success", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.presets = list_presets(self.app.presets_dir)
        options = self.query_one("#presets", OptionList)
        self._fill_options(options)
        if self.presets:
            options.highlighted = 0
            options.focus()
        else:
            self.query_one("#preset-desc", Static).update(
                f"[yellow]No presets in {self.app.presets_dir}[/]: add a YAML preset there (see `rrdtui presets`)."
            )

    def on_resize(self) -> None:
        self._size_list()

    def _fill_options(self, options: OptionList) -> None:
        options.clear_options()
        options.add_options([Option(p.stem, id=str(p)) for p in self.presets])
        self._size_list()

    def _size_list(self) -> None:
        options = self.query_one("#presets", OptionList)
        # Border and padding, and a scrollbar's width kept free whether or not one shows.
        chrome = options.styles.gutter.width + options.styles.scrollbar_size_vertical
        longest = max((len(p.stem) for p in self.presets), default=0)
        room = (self.size.width or self.app.size.width) - FORM_MIN
        options.styles.width = max(LIST_MIN, min(longest + chrome, room))

    # -- preset and fields --------------------------------------------------------------------

    @on(OptionList.OptionHighlighted, "#presets")
    def _preset_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.load(Path(event.option.id))

    @on(OptionList.OptionSelected, "#presets")
    def _preset_selected(self, event: OptionList.OptionSelected) -> None:
        self.query_one(f"#{field_id('method.tau_s')}", Input).focus()

    def load(self, path: Path) -> None:
        """Show a preset: its description and the values of the editable fields."""
        self.preset = path
        desc = self.query_one("#preset-desc", Static)
        try:
            self.raw = read_yaml(path)
        except ConfigError as exc:
            self.raw = {}
            desc.update(Text(str(exc), style="red"))
        else:
            text = str(self.raw.get("description") or "(no description)").strip()
            desc.update(Text(f"{path.name}: ", style="bold") + Text(" ".join(text.split())))
        defaults = Config().to_dict()
        self.initial = {}
        for key, _ in FIELDS:
            value = _get(self.raw, key)
            if value is None and key not in WEIGHTS:
                value = _get(defaults, key)
            self.initial[key] = _text(value)
        for key, _ in FIELDS:
            widget = self.query_one(f"#{field_id(key)}")
            if isinstance(widget, Select):
                value = self.initial[key]
                widget.value = value if value in self.choices[key] else Select.NULL
            else:
                widget.value = self.initial[key]
        self._show_method()
        self.validate()

    def _value(self, key: str) -> str:
        widget = self.query_one(f"#{field_id(key)}")
        if isinstance(widget, Select):
            return "" if widget.is_blank() else str(widget.value)
        return widget.value.strip()

    def overrides(self) -> list[str]:
        """The edits as `--set` overrides: only fields that differ from the preset."""
        out = []
        for key, _ in FIELDS:
            text = self._value(key)
            if text == self.initial.get(key, ""):
                continue
            if key in self.choices and not text:
                continue
            if key in WEIGHTS and not text:
                continue  # empty weight: the method's default
            out.append(f"{key}={text}")
        for i, key in enumerate(self.option_keys[:OPTION_SLOTS]):
            text = self.query_one(f"#f-option-{i}", Input).value.strip()
            if text and text != self.option_initial.get(key, ""):
                out.append(f"method.options.{key}={text}")  # empty: the preset's value, else the default
        return out

    def _method_info(self) -> MethodInfo | None:
        return registered_methods().get(self._value("method.name"))

    def _show_method(self) -> None:
        """The selected method: its paper and default weights, the weights' placeholders and its
        options (method.options.<key>, each with the preset's value or its default as placeholder)."""
        info = self._method_info()
        self._shown_method = info.name if info else None
        weights = info.weights if info else None
        for key in WEIGHTS:
            box = self.query_one(f"#{field_id(key)}", Input)
            box.placeholder = f"default {weights[key.split('.')[1]]:g}" if weights else "method default"
        box = self.query_one("#method-info", Static)
        if info is None:
            box.update("")
        else:
            title = Text(info.title, style="bold", no_wrap=True, overflow="ellipsis")
            more = list(info.options)[OPTION_SLOTS:]
            line = f"γ/α/β {weights_text(info.weights)} · {short_citation(info.paper)}"
            if more:
                line = f"{line} · also {', '.join(f'method.options.{k}' for k in more)}"
            lines = Text("\n", no_wrap=True, overflow="ellipsis").join([title, Text(line, style="dim")])
            box.update(lines)
        options = dict(info.options) if info else {}
        self.option_keys = tuple(options)
        self.option_initial = {k: _text(_get(self.raw, f"method.options.{k}")) for k in self.option_keys}
        for i in range(OPTION_SLOTS):
            label = self.query_one(f"#option-label-{i}", Label)
            box = self.query_one(f"#f-option-{i}", Input)
            shown = i < len(self.option_keys)
            label.display = box.display = shown
            if shown:
                key = self.option_keys[i]
                label.update(Text(key))
                label.tooltip = box.tooltip = f"method.options.{key}"
                box.placeholder = f"default {_text(options[key]) or 'null'}"
                box.value = self.option_initial[key]

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        if event.input.id and event.input.id.startswith("f-"):
            self.validate()

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        if self._value("method.name") != (self._shown_method or ""):
            self._show_method()  # another method: its paper, weights and options
        self.validate()

    def validate(self) -> None:
        """The CLI's validation of preset + overrides, now; the launch checks follow in a thread."""
        if self.preset is None:
            return
        self._seq += 1
        try:
            self.cfg = load_preset(self.preset, self.overrides())
        except ConfigError as exc:
            self.cfg = None
            self.error = str(exc)
            self.checking = False
            self.query_one("#plan", Static).update("")
        else:
            self.error = None
            self.checking = True
            self._schedule_check()
        self._show_verdict()

    def _show_verdict(self) -> None:
        verdict = self.query_one("#verdict", Static)
        sets = " ".join(f"--set {o}" for o in self.overrides()) if self.preset else ""
        detail = Text(f"  {sets}" if sets else "  (preset as is)", style="dim")
        if self.error is not None:
            verdict.update(Text(f"✗ {self.error}", style="bold red"))
        elif self.checking:
            verdict.update(Text("checking…", style="bold") + detail)
        elif self.check_error is not None:
            verdict.update(Text(f"✗ {self.check_error}", style="bold red"))
        else:
            verdict.update(Text("✓ valid", style="bold green") + detail)
        self._set_buttons()

    def _set_buttons(self) -> None:
        # While the checks run, launching is allowed: the launch makes the same checks first.
        ok = self.cfg is not None and not self.launching and (self.checking or self.check_error is None)
        self.query_one("#launch", Button).disabled = not ok
        self.query_one("#save", Button).disabled = self.cfg is None

    # -- teacher plan and launch checks --------------------------------------------------------

    def _schedule_check(self) -> None:
        """Check the inputs once typing pauses; one check at a time, the newest inputs last."""
        if self._check_timer is not None:
            self._check_timer.stop()
        self._check_timer = self.set_timer(0.15, self._start_check)

    def _start_check(self) -> None:
        if self._check_running or self.cfg is None or self._check_started == self._seq:
            return  # one is running (it starts the next when done), or these inputs are checked
        self._check_running = True
        self._check_started = self._seq
        self._check(self._seq, copy.deepcopy(self.cfg), str(self.preset), self.app.runs_dir)

    @work(thread=True, exit_on_error=False, group="launch-check")
    def _check(self, seq: int, cfg: Config, preset: str, runs_dir: Path) -> None:
        from rrdtui import launcher
        from rrdtui.preflight import check_launch

        error = None
        try:
            with open_store(runs_dir) as store:
                try:
                    text = launcher.teacher_plan(copy.deepcopy(cfg), store, preset)
                except Exception as exc:  # the checks below say why, in full
                    text = f"teacher: cannot tell ({_first_line(exc)})"
                self.post_message(PlanReady(seq, text))
                check_launch(cfg, preset, store)  # plans again (cfg is ours) and checks every run
        except ConfigError as exc:
            error = str(exc)
        except Exception as exc:
            error = f"cannot check the launch: {_first_line(exc)}"
        self.post_message(Checked(seq, error))

    def on_plan_ready(self, message: PlanReady) -> None:
        if message.seq == self._seq:
            self.plan = message.text
            self.query_one("#plan", Static).update(Text(message.text, style="cyan"))

    def on_checked(self, message: Checked) -> None:
        self._check_running = False
        if message.seq != self._seq:
            self._start_check()  # the inputs changed meanwhile: check the newest
            return
        self.checking = False
        self.check_error = message.error
        self._show_verdict()

    # -- launch and save ----------------------------------------------------------------------

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "launch":
            self.action_launch()
        elif event.button.id == "save":
            self.action_save()

    def action_back(self) -> None:
        self.dismiss(None)

    def action_launch(self) -> None:
        if self.preset is None or self.launching:
            return
        if self.cfg is None or (self.check_error and not self.checking):
            self.notify(self.error or self.check_error or "fix the configuration first", severity="error")
            return
        self.launching = True
        self._set_buttons()
        self.query_one("#verdict", Static).update(Text("launching…", style="bold"))
        self._launch(str(self.preset), self.overrides(), self.app.runs_dir)

    @work(thread=True, exit_on_error=False, group="launch")
    def _launch(self, preset: str, overrides: list[str], runs_dir: Path) -> None:
        try:
            from rrdtui import launcher

            ids = launcher.launch(preset, overrides, runs_dir, detach=True)
        except Exception as exc:
            self.post_message(Launched(None, _first_line(exc)))
            return
        self.post_message(Launched(list(ids), None))

    def on_launched(self, message: Launched) -> None:
        self.launching = False
        if message.error:
            self.query_one("#verdict", Static).update(Text(f"✗ {message.error}", style="bold red"))
            self._set_buttons()
            return
        ids = message.ids or []
        what = f"launched {ids[-1]}" if ids else "launched"
        if len(ids) > 1:
            what += f" (after its teacher {', '.join(ids[:-1])})"
        self.notify(what)
        self.dismiss(ids)

    def action_save(self) -> None:
        if self.preset is None:
            return
        if self.cfg is None:
            self.notify(self.error or "fix the configuration first", severity="error")
            return
        name = self.query_one("#save-name", Input).value.strip()
        if name.endswith((".yaml", ".yml")):
            name = name.rsplit(".", 1)[0]
        if not PRESET_NAME.match(name):
            self.notify("Type a preset name (letters, digits, _ . -) in the name box first.", severity="warning")
            self.query_one("#save-name", Input).focus()
            return
        target = self.app.presets_dir / f"{name}.yaml"
        if target.exists():
            self.notify(f"{target} exists: pick another name", severity="error")
            return
        raw = apply_overrides(self.raw, self.overrides())
        raw["name"] = name
        header = f"# {name}: saved from the dashboard, based on {self.preset.name}\n"
        target.write_text(header + yaml.safe_dump(raw, sort_keys=False, default_flow_style=None))
        self.notify(f"saved {target}")
        self.presets = list_presets(self.app.presets_dir)
        options = self.query_one("#presets", OptionList)
        self._fill_options(options)
        options.highlighted = self.presets.index(target) if target in self.presets else 0
