"""The key map of the screen below (from its live bindings), plus what the columns and plots mean."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

NOTES = """\
[b]Runs[/b]  best/last: validation top-1 %; paper: the published number for this pair and method
(config.paper); τs/τt: RRD student/teacher temperatures. Crashed and diverged runs stand out.
[b]Detail[/b]  reference lines: the teacher's accuracy and the paper's number. Entropy: how sharp
each side's distribution over the queue is (lower = sharper).
[b]Compare[/b]  Δ against the first marked run. RI = (Acc_method - Acc_KD) / (Acc_KD - Acc_student),
from the paper's numbers ("RI paper") or from this run's best accuracy ("RI ours").
[b]Studies[/b] (y from the runs)  progress and runner of each study; its seed groups (final mean ± std
over completed seeds, N); a heatmap of a 2-key grid; space selects groups for the mean ± std curves.
ctrl+p opens the command palette (launch, compare, open a run by id, theme)."""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, screen_name: str, sections: dict[str, list[tuple[str, str, bool]]]):
        super().__init__()
        self.screen_name = screen_name
        self.sections = sections

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, padding=(0, 1), expand=False)
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for section, keys in self.sections.items():
            if not keys:
                continue
            table.add_row(Text(section, style="bold"), "")
            for key, description, enabled in keys:
                table.add_row(key, Text(description, style="" if enabled else "dim"))
        title = self.screen_name.replace("Screen", "").lower()
        with VerticalScroll(id="help-box"):
            yield Static(f"[b]Keys: {title} screen[/b]   (escape or ? to close)", id="help-title")
            yield Static(table, id="help-keys")
            yield Static(NOTES, id="help-notes")

    def action_close(self) -> None:
        self.dismiss(None)
