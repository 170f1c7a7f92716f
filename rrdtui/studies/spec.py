"""Study files: YAML -> the list of runs a study stands for, validated before anything is written.

A study file names one or more base presets, a grid of `--set`-style overrides (every combination)
and seeds:

    name: demo
    description: vanilla, KD and RRD students of the demo teacher over 2 seeds
    presets: [../demo.yaml]           # relative to the study file, or a preset's name
    set: [train.epochs=3]             # overrides for every run (optional)
    grid:                             # every combination of these values (optional)
      method.name: [none, kd, rrd]
    variants:                         # named bundles of overrides, each combined with the grid (optional)
      sharp-student: [method.tau_s=0.04, method.tau_t=0.1]
      sharp-teacher: [method.tau_s=0.1, method.tau_t=0.02]
    seeds: [0, 1]                     # each point once per seed (optional: the preset's seed)

Every run is loaded as `rrdtui run PRESET --set ...` would load it, so a key that does not exist, a
value of the wrong type or an impossible combination is refused here, in one line naming the study
file and the run, before the store is touched. No torch here.
"""

from __future__ import annotations

import difflib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rrdtui.config import Config, ConfigError, load_preset, read_yaml
from rrdtui.studies.table import fmt_value, short_key

STUDY_KEYS = ("name", "description", "presets", "set", "grid", "variants", "seeds")


@dataclass
class Point:
    """One run of a study: a base preset, a variant, one value per grid key, and a seed."""

    preset: str  # the base preset's path, as resolved
    grid: dict[str, Any]
    seed: int | None  # None: the preset's own seed
    config: Config
    variant: str | None = None
    variant_overrides: list[str] = field(default_factory=list)

    @property
    def overrides(self) -> list[str]:
        return self.variant_overrides + [f"{k}={_yaml_value(v)}" for k, v in self.grid.items()] + (
            [f"seed={self.seed}"] if self.seed is not None else []
        )

    def key(self) -> str:
        """The point's identity in the store (runs.study_point): stable across re-runs of the file."""
        point: dict[str, Any] = {"preset": Path(self.preset).name, "grid": self.grid, "seed": self.seed}
        if self.variant is not None:
            point["variant"] = self.variant
        return json.dumps(point, sort_keys=True)

    def label(self) -> str:
        return point_label(json.loads(self.key()), Path(self.preset).stem)


@dataclass
class Study:
    name: str
    file: str
    description: str
    presets: list[str]
    overrides: list[str]  # `set` of the file, then --set of the command
    grid: dict[str, list[Any]]
    seeds: list[int] | None
    variants: dict[str, list[str]] = field(default_factory=dict)
    points: list[Point] = field(default_factory=list)

    def spec(self) -> dict[str, Any]:
        """What the store keeps of the study (studies.spec)."""
        return {
            "name": self.name,
            "description": self.description,
            "presets": self.presets,
            "set": self.overrides,
            "grid": self.grid,
            "variants": self.variants,
            "seeds": self.seeds,
            "runs": len(self.points),
        }


def point_label(point: dict[str, Any], preset_stem: str) -> str:
    """`demo method=rrd seed=1`: a point of a study (runs.study_point) in a few words."""
    parts = [preset_stem] + ([point["variant"]] if point.get("variant") else [])
    keys = list(point.get("grid") or {})
    parts += [f"{short_key(k, keys)}={fmt_value(v)}" for k, v in (point.get("grid") or {}).items()]
    if point.get("seed") is not None:
        parts.append(f"seed={point['seed']}")
    return " ".join(parts)


def _yaml_value(value: Any) -> str:
    """A grid value as `--set` text that parses back to the same value (lists, strings, numbers)."""
    return json.dumps(value) if not isinstance(value, str) else value


def find_study_file(ref: str) -> Path:
    """A study file by path, or by name among the shipped studies (presets/studies/NAME.yaml)."""
    path = Path(ref).expanduser()
    if path.is_file() or path.suffix in (".yaml", ".yml") or "/" in ref:
        return path
    from rrdtui.presets import presets_dir

    for folder in (Path("presets") / "studies", presets_dir() / "studies"):
        candidate = folder / f"{ref}.yaml"
        if candidate.is_file():
            return candidate
    return path


def _base_preset(study_file: Path, ref: Any) -> Path:
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"{study_file}: presets: each entry must be a preset file, got {ref!r}")
    candidates = [study_file.parent / ref, Path(ref), study_file.parent.parent / f"{ref}.yaml", Path("presets") / f"{ref}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"{study_file}: presets: '{ref}' not found (looked beside the study file and in ./presets)")


def load_study(ref: str, extra_overrides: list[str] | None = None) -> Study:
    """Read, expand and validate a study file; raise ConfigError (one line) on the first problem."""
    path = find_study_file(ref)
    if not path.exists():
        raise ConfigError(f"{ref}: study file not found (the shipped ones are in presets/studies/)")
    raw = read_yaml(path)
    for key in raw:
        if key not in STUDY_KEYS:
            close = difflib.get_close_matches(str(key), STUDY_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{path}: unknown key '{key}'{hint}; a study has {', '.join(STUDY_KEYS)}")

    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name.strip() or "/" in name or name.startswith("."):
        raise ConfigError(f"{path}: name must be a plain word (it names the study's folder), got {name!r}")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"{path}: description must be text, got {description!r}")

    presets = raw.get("presets")
    if isinstance(presets, str):
        presets = [presets]
    if not isinstance(presets, list) or not presets:
        raise ConfigError(f"{path}: presets must list one or more base presets, for example presets: [../demo.yaml]")
    preset_paths = [_base_preset(path, p) for p in presets]

    overrides = raw.get("set") or []
    if isinstance(overrides, str):
        overrides = [overrides]
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{path}: set must be a list of key=value overrides, got {overrides!r}")
    overrides = overrides + list(extra_overrides or [])

    grid = _grid(path, raw)
    variants = _variants(path, raw)
    seeds = _seeds(path, raw)

    study = Study(name, str(path), description.strip(), [str(p) for p in preset_paths], overrides, grid, seeds, variants)
    combos = list(itertools.product(*grid.values())) if grid else [()]
    for preset, variant, combo, seed in itertools.product(
        preset_paths, list(variants) or [None], combos, seeds or [None]
    ):
        point = Point(
            str(preset), dict(zip(grid.keys(), combo)), seed, config=None,  # type: ignore[arg-type]
            variant=variant, variant_overrides=variants[variant] if variant else [],
        )  # fmt: skip
        try:
            point.config = load_preset(preset, overrides + point.overrides)
        except ConfigError as exc:
            raise ConfigError(f"{path}: the run {point.label()} is refused: {exc}") from None
        study.points.append(point)
    keys = [p.key() for p in study.points]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{path}: two runs of the study are the same point (a preset or a value listed twice?)")
    return study


def _grid(path: Path, raw: dict[str, Any]) -> dict[str, list[Any]]:
    if "grid" not in raw:
        return {}
    grid = raw["grid"]
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(
            f"{path}: grid is empty: give each key a list of values (grid: {{method.tau_s: [0.02, 0.04]}}), "
            "or leave grid out for a study of seeds only"
        )
    out: dict[str, list[Any]] = {}
    for key, values in grid.items():
        if not isinstance(key, str) or not key or key == "seed":
            hint = " (list seeds under seeds:)" if key == "seed" else ""
            raise ConfigError(f"{path}: grid key {key!r} is not a configuration key{hint}")
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise ConfigError(f"{path}: grid.{key} is empty: give it one or more values")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise ConfigError(f"{path}: grid.{key} lists a value twice")
        out[key] = values
    return out


def _variants(path: Path, raw: dict[str, Any]) -> dict[str, list[str]]:
    if "variants" not in raw:
        return {}
    variants = raw["variants"]
    if not isinstance(variants, dict) or not variants:
        raise ConfigError(f"{path}: variants must map names to lists of overrides (variants: {{a: [method.tau_s=0.1]}})")
    out: dict[str, list[str]] = {}
    for name, overrides in variants.items():
        if isinstance(overrides, str):
            overrides = [overrides]
        if not isinstance(overrides, list) or not overrides or not all(isinstance(o, str) and "=" in o for o in overrides):
            raise ConfigError(f"{path}: variants.{name} must list key=value overrides, got {overrides!r}")
        out[str(name)] = overrides
    return out


def _seeds(path: Path, raw: dict[str, Any]) -> list[int] | None:
    if "seeds" not in raw or raw["seeds"] is None:
        return None
    seeds = raw["seeds"]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        raise ConfigError(f"{path}: seeds must be a list of non-negative integers, for example seeds: [0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: seeds lists a seed twice")
    return seeds
