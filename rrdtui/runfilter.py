"""Notes, tags and `key=value` filters on runs: `rrdtui note`, `rrdtui tag`, `rrdtui ls --filter`.

A run's note and tags are kept in the store's artifacts table (artifacts "note", a string, and
"tags", a sorted list). A filter `key=value` matches a run when:
- key is `status`, `tag` (one of its tags) or `id` (a prefix), against that;
- key is `method`, against method.name (likewise `name`, `data`, `student`, `teacher`: the run's
  name, data.name, student.arch, teacher.arch);
- otherwise key names a configuration value: a full path (`method.tau_s`) or its end (`tau_s`,
  `options.p`), and the value is compared as YAML (`0.07` equals 0.07 and 7e-2, `[3,5]` a list).
A key that ends several paths (`arch`: student.arch and teacher.arch) matches when any of them
does. No torch, no UI: the dashboard can filter with the same function.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from rrdtui.config import Config, ConfigError, flatten, load_yaml

NOTE, TAGS = "note", "tags"

# Keys about the run rather than its configuration.
RUN_KEYS = ("status", "tag", "id", "name")
# Short keys for what every run list shows, and the configuration path each stands for.
ALIASES = {"method": "method.name", "data": "data.name", "student": "student.arch", "teacher": "teacher.arch"}


def run_note(store, run_id: str) -> str | None:
    return store.get_artifact(run_id, NOTE)


def run_tags(store, run_id: str) -> list[str]:
    return list(store.get_artifact(run_id, TAGS) or [])


def parse_filters(texts: list[str]) -> list[tuple[str, Any, str]]:
    """`key=value` texts as (key, value parsed as YAML, value as typed); ConfigError naming a bad one."""
    filters = []
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--filter {text}: expected key=value, for example --filter tau_s=0.07 or --filter status=completed")
        try:
            parsed = load_yaml(value) if value.strip() else ""
        except Exception:  # not YAML: compared as the text typed
            parsed = value
        filters.append((key.strip(), parsed, value.strip()))
    return filters


def _equal(have: Any, want: Any, typed: str) -> bool:
    if isinstance(have, bool) or isinstance(want, bool):
        return have is want or str(have).lower() == typed.lower()
    if isinstance(have, (int, float)) and isinstance(want, (int, float)):
        return float(have) == float(want)
    return have == want or str(have) == typed


def matches(row: dict[str, Any], filters: list[tuple[str, Any, str]], tags: list[str] | None = None) -> bool:
    """Whether a store row (its `config` JSON included) passes every filter of parse_filters()."""
    config = json.loads(row["config"]) if row.get("config") else {}
    flat = flatten(config)
    for key, want, typed in filters:
        if key == "status":
            ok = row.get("status") == typed
        elif key == "tag":
            ok = typed in (tags or [])
        elif key == "id":
            ok = str(row.get("id", "")).startswith(typed)
        elif key == "name":
            ok = row.get("name") == typed or config.get("name") == typed
        else:
            path = ALIASES.get(key, key)
            paths = [p for p in flat if p == path or p.endswith("." + path)]
            ok = any(_equal(flat[p], want, typed) for p in paths)
        if not ok:
            return False
    return True


def check_keys(filters: list[tuple[str, Any, str]], rows: list[dict[str, Any]]) -> None:
    """Raise ConfigError for a filter key that names nothing: not a run key, and no configuration
    path (of the defaults or of one of `rows`) is it or ends with it. A typo lists no runs otherwise."""
    paths = set(flatten(Config().to_dict()))
    for row in rows:
        paths.update(flatten(json.loads(row["config"])) if row.get("config") else {})
    for key, _, typed in filters:
        path = ALIASES.get(key, key)
        if key in RUN_KEYS or any(p == path or p.endswith("." + path) for p in paths):
            continue
        names = sorted(set(RUN_KEYS) | set(ALIASES) | paths | {p.rsplit(".", 1)[-1] for p in paths})
        close = difflib.get_close_matches(key, names, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(
            f"--filter {key}={typed}: no run has a '{key}' ({hint}filter by status, tag, method or any "
            "configuration key, e.g. tau_s or optim.lr)"
        )
