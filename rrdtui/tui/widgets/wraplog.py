"""A log whose long lines wrap at its width, so nothing is cut at 80 columns (a traceback's last line,
a long path): written as lines come, wrapped again when the width changes."""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.events import Resize
from textual.widgets import RichLog


class WrapLog(RichLog):
    def __init__(self, *, max_lines: int, id: str | None = None):
        super().__init__(max_lines=max_lines, wrap=True, min_width=1, id=id)
        self.raw: deque[str] = deque(maxlen=max_lines)  # the lines as written, to wrap again
        self._wrapped_at = 0

    def write_lines(self, lines: list[str]) -> None:
        self.raw.extend(lines)
        for line in lines:
            self.write(Text(line))

    def clear(self) -> WrapLog:
        self.raw.clear()
        return super().clear()

    def on_resize(self, event: Resize) -> None:
        # Runs before RichLog's own handler, which writes what came before the size was known.
        width = event.size.width
        if self._wrapped_at and width != self._wrapped_at and self.raw:
            lines = list(self.raw)
            super().clear()
            for line in lines:
                self.write(Text(line))
        self._wrapped_at = width
