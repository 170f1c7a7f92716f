"""The rrdtui dashboard: runs, run detail, launch, compare. Entry point `run_app(runs_dir, presets_dir)`.

Screens read the store in thread workers (one Store per read) and post small messages; only
handlers on the main thread touch widgets, and each screen's poll never overlaps the previous one.
This module and everything it imports stays free of torch.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen

from rrdtui.tui.model import RunLister, RunRow
from rrdtui.tui.screens.help import HelpScreen
from rrdtui.tui.screens.runs import FIRST_CHUNK, RunsScreen


class NotesSaved(Message):
    def __init__(self, run_id: str, tags: list[str], note: str, error: str | None):
        super().__init__()
        self.run_id = run_id
        self.tags = tags
        self.note = note
        self.error = error


class RRDApp(App):
    """The dashboard. `clock` gives "now" for times left (tests freeze it); `poll_interval` in seconds."""

    CSS_PATH = "app.tcss"
    TITLE = "rrdtui"
    SUB_TITLE = "relational representation distillation"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Keys", key_display="?"),
        Binding("y", "studies", "Studies", show=False),  # from the run list (check_action)
    ]

    def __init__(
        self,
        runs_dir: Path,
        presets_dir: Path,
        *,
        poll_interval: float = 2.0,
        clock: Callable[[], float] = time.time,
    ):
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.presets_dir = Path(presets_dir)
        self.poll_interval = poll_interval
        self.clock = clock
        self.first_runs: Future[list[RunRow] | None] | None = None

    def on_load(self) -> None:
        # The newest runs are read from the moment the app runs, while Textual starts; the run list
        # takes them as its first read (RunsScreen.poll). A plain thread: workers start later.
        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rrdtui-first-read")
        self.first_runs = reader.submit(RunLister().load_quick, self.runs_dir, FIRST_CHUNK)
        reader.shutdown(wait=False)

    def on_mount(self) -> None:
        self.push_screen(RunsScreen())

    @property
    def runs_screen(self) -> RunsScreen | None:
        for screen in self.screen_stack:
            if isinstance(screen, RunsScreen):
                return screen
        return None

    # -- studies ------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "studies":  # opened from the run list only
            return isinstance(self.screen, RunsScreen)
        return True

    def action_studies(self) -> None:
        from rrdtui.tui.screens.studies import StudiesScreen

        self.push_screen(StudiesScreen())

    # -- tags and notes (t on a run, in the run list and the detail) -----------------------------

    def edit_notes(self, run_id: str, tags: tuple[str, ...] | list[str], note: str) -> None:
        """A run's tags and note in a small form; what is saved is written in a thread worker."""
        from rrdtui.tui.screens.notes import NotesScreen

        def done(result: tuple[list[str], str] | None) -> None:
            if result is not None:
                self._save_notes(run_id, *result)

        self.push_screen(NotesScreen(run_id, tags, note), callback=done)

    @work(thread=True, exit_on_error=False, group="notes")
    def _save_notes(self, run_id: str, tags: list[str], note: str) -> None:
        from rrdtui.tui.screens.notes import save_notes

        try:
            save_notes(self.runs_dir, run_id, tags, note)
        except Exception as exc:
            self.post_message(NotesSaved(run_id, tags, note, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
            return
        self.post_message(NotesSaved(run_id, tags, note, None))

    def on_notes_saved(self, message: NotesSaved) -> None:
        if message.error:
            self.notify(f"tags of {message.run_id} not saved: {message.error}", severity="error", timeout=8)
            return
        self.notify(f"tags of {message.run_id}: {', '.join(message.tags) or '(none)'}")
        poll = getattr(self.screen, "poll", None)
        if poll is not None:
            poll()  # show them now

    # -- help and the command palette ---------------------------------------------------------

    def action_help(self) -> None:
        """The key map of the current screen, from its live bindings: screen, global, focused widget."""
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss()
            return
        sections: dict[str, list[tuple[str, str, bool]]] = {"this screen": [], "everywhere": [], "focused widget": []}
        screen = self.screen
        # The screen's own keys, all of them (a focused table may shadow one, e.g. enter).
        for binding in type(screen).BINDINGS:
            if isinstance(binding, Binding) and binding.description:
                enabled = screen.check_action(binding.action.split("(")[0], ()) is True
                sections["this screen"].append(
                    (binding.key_display or self.get_key_display(binding), binding.description, enabled)
                )
        for key, active in self.active_bindings.items():
            binding = active.binding
            if (
                not binding.description
                or key.startswith("super+")
                or active.node is screen
                and binding in type(screen).BINDINGS
            ):
                continue
            if isinstance(active.node, App) or binding.action.startswith("app.") or "copy" in binding.action:
                where = "everywhere"
            elif isinstance(active.node, Screen):
                continue
            else:
                where = "focused widget"
            sections[where].append(
                (binding.key_display or self.get_key_display(binding), binding.description, active.enabled)
            )
        sections["everywhere"].append(("^p", "Command palette", True))
        self.push_screen(HelpScreen(type(self.screen).__name__, sections))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Key map", "Show the keys of this screen (?)", self.action_help)
        runs = self.runs_screen
        if runs is None:
            return
        yield SystemCommand("Launch a run", "Pick a preset, edit it, launch it detached", runs.action_launch)
        yield SystemCommand("Compare marked runs", "Overlay curves, diff configs, compare metrics", runs.action_compare)
        yield SystemCommand("Group by preset", "Toggle grouping of the run list by preset", runs.action_group)
        yield SystemCommand("Filter runs", "Filter the run list by text", runs.action_filter)
        yield SystemCommand("Refresh", "Read the store now", runs.action_refresh)
        if type(screen).__name__ != "StudiesScreen":
            yield SystemCommand("Studies", "Each study's progress, grouped table, heatmap, curves (y)", self.action_studies)
        for row in runs.rows:
            yield SystemCommand(
                f"Open {row.id} {row.name}",
                f"{row.status} · {row.method} · {row.teacher}→{row.student}",
                lambda run_id=row.id: runs.open_run(run_id),
            )


def run_app(runs_dir: Path, presets_dir: Path) -> None:
    """Open the dashboard on a store folder and a presets folder (blocks until the user quits)."""
    RRDApp(Path(runs_dir), Path(presets_dir)).run()
