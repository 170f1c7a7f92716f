"""A run's tags and note (`t` on a run): a small form, and the write, shared by the run list and the
detail. They are the store's artifacts "tags" (a sorted list) and "note" (text), the ones `rrdtui tag`
and `rrdtui note` write (rrdtui.runfilter), so the filters of both find them."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from rrdtui.runfilter import NOTE, TAGS
from rrdtui.tui.model import open_store


def parse_tags(text: str) -> list[str]:
    """The tags typed, separated by spaces or commas, sorted and each once; ValueError for a tag that
    `rrdtui tag` would refuse (with an `=`, which filters read as key=value)."""
    tags = sorted(set(text.replace(",", " ").split()))
    for tag in tags:
        if "=" in tag:
            raise ValueError(f"tag '{tag}': a tag is one word without commas or '=' (e.g. baseline, paper-recipe)")
    return tags


def save_notes(runs_dir: Path, run_id: str, tags: list[str], note: str) -> None:
    """Write a run's tags and note (blocking: call from a thread worker). A blank note removes it."""
    with open_store(runs_dir) as store:
        store.put_artifact(run_id, TAGS, tags)
        store.put_artifact(run_id, NOTE, note.strip() or None)


class NotesScreen(ModalScreen[tuple[list[str], str] | None]):
    """Edit a run's tags and note; dismissed with (tags, note), or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, run_id: str, tags: list[str] | tuple[str, ...], note: str):
        super().__init__()
        self.run_id = run_id
        self.tags = list(tags)
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical(id="notes-box"):
            yield Static(f"[b]Tags and note of run {self.run_id}[/b]")
            yield Label("tags, separated by spaces (remove one by deleting it)", classes="notes-label")
            yield Input(" ".join(self.tags), placeholder="e.g. baseline paper-recipe", id="notes-tags")
            yield Label("note", classes="notes-label")
            yield Input(self.note, placeholder="a line about this run", id="notes-note")
            yield Static("[dim]enter saves · tab next field · escape cancels[/]", id="notes-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            tags = parse_tags(self.query_one("#notes-tags", Input).value)
        except ValueError as exc:
            self.query_one("#notes-error", Static).update(f"[red]{exc}[/]")
            self.query_one("#notes-tags", Input).focus()
            return
        self.dismiss((tags, self.query_one("#notes-note", Input).value.strip()))

    def action_cancel(self) -> None:
        self.dismiss(None)
