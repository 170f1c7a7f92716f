"""Write docs/methods.md from the method registry (rrdtui.registry.markdown).

    uv run python scripts/make_methods_doc.py [--check]

Run it after adding or changing a method (a module's SPEC or a line of REGISTRY) and commit the file;
tests/test_methods_surface.py fails while it is stale. `--check` writes nothing and exits with 1 when
the file differs from what the registry gives.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "methods.md"
sys.path.insert(0, str(ROOT))

from rrdtui.registry import markdown  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Only say whether docs/methods.md is up to date.")
    args = parser.parse_args()
    text = markdown()
    current = DOC.read_text(encoding="utf-8") if DOC.is_file() else None
    if args.check:
        if current != text:
            print(f"{DOC.relative_to(ROOT)} is stale: run `uv run python scripts/make_methods_doc.py`", file=sys.stderr)
            return 1
        print(f"{DOC.relative_to(ROOT)} is up to date")
        return 0
    if current == text:
        print(f"{DOC.relative_to(ROOT)} is up to date")
        return 0
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC.relative_to(ROOT)} ({text.count(chr(10) + '## ')} methods)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
