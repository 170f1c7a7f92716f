"""Tables of text that fit the terminal: `rrdtui ls`, `rrdtui presets` and `rrdtui methods`.

Laid out for 80 columns first. When a table is wider than the terminal, its columns give up room
one by one, in the order each declares: a text column (a name, a note, a description) is cut (with …)
down to its minimum, other columns go whole. A number is never cut: a column of numbers is shown
whole or not at all.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

GAP = " "


def terminal_columns() -> int:
    """The terminal's width ($COLUMNS first); 80 when the output is not a terminal."""
    return shutil.get_terminal_size((80, 24)).columns


@dataclass(frozen=True)
class Col:
    header: str
    key: str
    right: bool = False  # numbers align right
    order: int = 0  # when narrow, columns with higher numbers give up their room first; 0: never
    cut: int = 0  # text that may be cut (with …) down to this many characters first; 0: never cut
    keep: bool = False  # cut, but never dropped
    words: bool = False  # cut at a word boundary (descriptions), not anywhere (names)


def cut_text(text: str, room: int, words: bool = False) -> str:
    """`text` in `room` columns, ending in … when cut: at a word boundary when `words` (no dangling
    "(arXiv"), else anywhere."""
    if len(text) <= room:
        return text
    if words:
        parts = text.split(" ")
        while len(parts) > 1 and (len(" ".join(parts)) + 2 > room or parts[-1].startswith("(")):
            parts.pop()
        out = " ".join(parts) + " …"
        if len(out) <= room:
            return out
    return text[: max(0, room - 1)] + "…"


def fit(cols: list[Col], rows: list[dict[str, str]], width: int) -> list[str]:
    """The header and the rows, laid out in at most `width` columns (see the module's docstring)."""
    natural = {c.key: max([len(c.header)] + [len(r.get(c.key, "")) for r in rows]) for c in cols}
    widths = dict(natural)
    shown = list(cols)

    def excess() -> int:
        return sum(widths[c.key] for c in shown) + len(GAP) * (len(shown) - 1) - width

    for c in sorted((c for c in cols if c.order), key=lambda c: -c.order):
        if excess() <= 0:
            break
        if c.cut:
            widths[c.key] = max(min(natural[c.key], c.cut), widths[c.key] - excess())
        if excess() > 0 and not c.keep:
            shown.remove(c)
    # What dropping a column freed goes back to the text cut before it, the most important first.
    for c in sorted((c for c in shown if c.cut), key=lambda c: c.order):
        widths[c.key] = min(natural[c.key], widths[c.key] + max(0, -excess()))

    def line(cells: dict[str, str]) -> str:
        out = []
        for c in shown:
            text = cut_text(cells.get(c.key, ""), widths[c.key], c.words) if c.cut else cells.get(c.key, "")
            out.append(text.rjust(widths[c.key]) if c.right else text.ljust(widths[c.key]))
        return GAP.join(out).rstrip()

    return [line({c.key: c.header for c in cols})] + [line(r) for r in rows]
