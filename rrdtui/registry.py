"""The one list of distillation methods, readable without torch.

A method is one module (under `rrdtui/train/methods/`, or anywhere on the Python path) that holds a
literal `SPEC = {...}` dict and a `DISTILLER` class; the registry below names the module, one line per
method. The CLI, the dashboard and the configuration read each SPEC from the module's source with
`ast.literal_eval`, so they learn a method's paper, weights, features and loss terms without
importing torch; only the trainer imports the module itself.

SPEC keys:
- name: the method's name in presets (`method.name`); `<name>+kd` adds Hinton's KD to it.
- title, paper: the paper's title and "Authors, venue year (arXiv id)"; formula: one line.
- weights: {"gamma": CE, "alpha": KD, "beta": the method's own terms}, the published defaults.
- features: what the method reads besides the logits: "feat" (the penultimate feature), "maps"
  (every stage's output), "preact" (the stages' pre-activation outputs).
- losses: the names of the terms it adds (reported as train/loss_<name>, weighted by beta).
- options: method-specific settings and their defaults (`method.options.<key>` in a preset).
- teacher: whether it needs a teacher (default true).
- paper_key: the method's column in the paper's tables, where it has one.
- first_stage: a short description, when the method trains a part of itself before the run proper.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# One line per method: its name and the module that implements it.
REGISTRY: dict[str, str] = {
    "none": "rrdtui.train.methods.none",
    "kd": "rrdtui.train.methods.kd",
    "rrd": "rrdtui.train.methods.rrd",
    "crd": "rrdtui.train.methods.crd",
}

KD_SUFFIX = "+kd"
FEATURES = ("feat", "maps", "preact")
WEIGHT_KEYS = ("gamma", "alpha", "beta")


class RegistryError(Exception):
    """A method module whose SPEC cannot be read: names the module and the problem."""


@dataclass(frozen=True)
class MethodInfo:
    name: str
    module: str
    title: str
    paper: str
    formula: str
    weights: dict[str, float]
    features: tuple[str, ...] = ()
    losses: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    teacher: bool = True
    paper_key: str | None = None
    first_stage: str | None = None
    base: str | None = None  # for "<name>+kd": the method KD is added to

    @property
    def terms(self) -> tuple[str, ...]:
        """Every term the loss can report: ce, kd when alpha > 0, then the method's own."""
        return ("ce",) + (("kd",) if self.weights["alpha"] > 0 or self.name == "kd" else ()) + self.losses


def register(name: str, module: str) -> None:
    """Add a method at run time (a plug-in, or a test): the module must hold SPEC and DISTILLER."""
    REGISTRY[name] = module
    _spec.cache_clear()
    methods.cache_clear()


def _source(module: str) -> str:
    found = importlib.util.find_spec(module)
    if found is None or not found.origin or not Path(found.origin).is_file():
        raise RegistryError(f"method module {module} not found")
    return Path(found.origin).read_text(encoding="utf-8")


@functools.cache
def _spec(module: str) -> dict[str, Any]:
    """The literal SPEC dict of a method module, read without executing the module."""
    tree = ast.parse(_source(module))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "SPEC" for t in node.targets):
            try:
                spec = ast.literal_eval(node.value)
            except ValueError as exc:
                raise RegistryError(f"{module}: SPEC must be a literal dict ({exc})") from None
            if not isinstance(spec, dict):
                raise RegistryError(f"{module}: SPEC must be a dict")
            return spec
    raise RegistryError(f"{module}: no SPEC = {{...}} at module level")


def _info(name: str, module: str) -> MethodInfo:
    spec = dict(_spec(module))
    if spec.get("name") != name:
        raise RegistryError(f"{module}: SPEC name is {spec.get('name')!r}, registered as {name!r}")
    weights = {k: float(spec["weights"].get(k, 0.0)) for k in WEIGHT_KEYS}
    unknown = set(spec.get("features", ())) - set(FEATURES)
    if unknown:
        raise RegistryError(f"{module}: unknown features {sorted(unknown)} (choose from {', '.join(FEATURES)})")
    return MethodInfo(
        name=name,
        module=module,
        title=spec["title"],
        paper=spec["paper"],
        formula=spec["formula"],
        weights=weights,
        features=tuple(spec.get("features", ())),
        losses=tuple(spec.get("losses", ())),
        options=dict(spec.get("options", {})),
        teacher=bool(spec.get("teacher", True)),
        paper_key=spec.get("paper_key"),
        first_stage=spec.get("first_stage"),
    )


def _with_kd(info: MethodInfo) -> MethodInfo:
    """`<method>+kd`: the method's own weights plus KD at alpha 1, as the paper's RRD+KD and CRD+KD."""
    return MethodInfo(
        name=info.name + KD_SUFFIX,
        module=info.module,
        title=f"{info.title}, with KD",
        paper=info.paper,
        formula=f"{info.formula} + alpha*KD",
        weights={**info.weights, "alpha": 1.0},
        features=info.features,
        losses=info.losses,
        options=info.options,
        teacher=True,
        paper_key=f"{info.paper_key}+KD" if info.paper_key else None,
        first_stage=info.first_stage,
        base=info.name,
    )


@functools.cache
def methods() -> dict[str, MethodInfo]:
    """Every method by name, each followed by its +kd combination (for methods other than none/kd)."""
    out: dict[str, MethodInfo] = {}
    for name, module in REGISTRY.items():
        info = _info(name, module)
        out[name] = info
        if info.teacher and name != "kd":
            out[name + KD_SUFFIX] = _with_kd(info)
    return out


def method_names() -> tuple[str, ...]:
    return tuple(methods())


def method_info(name: str) -> MethodInfo:
    """The method called `name` (KeyError for an unknown name)."""
    return methods()[name]


def default_weights(name: str) -> dict[str, float]:
    return dict(method_info(name).weights)
