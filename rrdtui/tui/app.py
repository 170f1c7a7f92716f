"""The rrdtui dashboard: runs, run detail, launch, compare. Entry point `run_app(runs_dir, presets_dir)`.

Screens read the store in thread workers (one Store per read) and post small messages; only
handlers on the main thread touch widgets, and each screen's poll never overlaps the previous one.
This module and everything it imports stays free of torch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from rrdtui.tui.screens.help import HelpScreen
from rrdtui.tui.screens.runs import RunsScreen


class RRDApp(App):
    """The dashboard. `clock` gives "now" for times left (tests freeze it); `poll_interval` in seconds."""

    CSS_PATH = "app.tcss"
    TITLE = "rrdtui"
    SUB_TITLE = "relational representation distillation"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Keys", key_display="?"),
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

    def on_mount(self) -> None:
        self.push_screen(RunsScreen())

    @property
    def runs_screen(self) -> RunsScreen | None:
        for screen in self.screen_stack:
            if isinstance(screen, RunsScreen):
                return screen
        return None

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
        for row in runs.rows:
            yield SystemCommand(
                f"Open {row.id} {row.name}",
                f"{row.status} · {row.method} · {row.teacher}→{row.student}",
                lambda run_id=row.id: runs.open_run(run_id),
            )


def run_app(runs_dir: Path, presets_dir: Path) -> None:
    """Open the dashboard on a store folder and a presets folder (blocks until the user quits)."""
    RRDApp(Path(runs_dir), Path(presets_dir)).run()
