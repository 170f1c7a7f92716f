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
    "fitnet": "rrdtui.train.methods.fitnet",
    "at": "rrdtui.train.methods.at",
    "sp": "rrdtui.train.methods.sp",
    "cc": "rrdtui.train.methods.cc",
    "vid": "rrdtui.train.methods.vid",
    "rkd": "rrdtui.train.methods.rkd",
    "pkt": "rrdtui.train.methods.pkt",
    "ab": "rrdtui.train.methods.ab",
    "ft": "rrdtui.train.methods.ft",
    "fsp": "rrdtui.train.methods.fsp",
    "nst": "rrdtui.train.methods.nst",
    "dkd": "rrdtui.train.methods.dkd",
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


def paper_key(name: str) -> str | None:
    """The method's column in the paper's tables (None for a method the paper does not report)."""
    info = methods().get(name)
    return info.paper_key if info else None


def uses_relation_temperatures(name: str) -> bool:
    """Whether method.tau_s and method.tau_t mean anything for this method (RRD and its +kd)."""
    info = methods().get(name)
    return bool(info and "rrd" in info.losses)


# ---------------------------------------------------------------------------------------------
# How the methods are described: `rrdtui methods`, the launch screen and docs/methods.md
# ---------------------------------------------------------------------------------------------


def weights_text(weights: dict[str, float], sep: str = "/") -> str:
    """gamma/alpha/beta, compact: {"gamma": 1.0, "alpha": 0.0, "beta": 0.8} -> "1/0/0.8"."""
    return sep.join(f"{weights[k]:g}" for k in WEIGHT_KEYS)


def short_citation(paper: str) -> str:
    """The first author only when there are more than two: "Tian, Krishnan and Isola, ICLR 2020
    (arXiv 1910.10699)" -> "Tian et al., ICLR 2020 (arXiv 1910.10699)". The authors are the leading
    comma-separated parts without a digit; a text without such a split is returned as it is."""
    parts = paper.split(", ")
    n = next((i for i, part in enumerate(parts) if any(c.isdigit() for c in part)), 0)
    if n == 0:
        return paper
    names = [name for part in parts[:n] for name in part.split(" and ")]
    authors = f"{names[0]} et al." if len(names) > 2 else ", ".join(parts[:n])
    return ", ".join([authors, *parts[n:]])


def _option_text(value: Any) -> str:
    import json

    return json.dumps(value)  # as in YAML: null, true, 0.5, "text"


def markdown() -> str:
    """docs/methods.md: every registered method (not the +kd combinations), from its SPEC."""
    import re

    def linked(paper: str) -> str:
        return re.sub(r"arXiv (\d{4}\.\d{4,5})", r"[arXiv \1](https://arxiv.org/abs/\1)", paper)

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    infos = [info for info in methods().values() if info.base is None]
    lines = [
        "# Distillation methods",
        "",
        "Generated from the method registry (`rrdtui/registry.py` and each method module's `SPEC`) by",
        "`uv run python scripts/make_methods_doc.py`: do not edit it by hand. `rrdtui methods` lists the",
        "same in the terminal (`--json` for every field).",
        "",
        "Every method trains the student on one loss,",
        "",
        "    L = gamma * CE(labels, student) + alpha * KD(teacher, student) + beta * (the method's own terms)",
        "",
        "with the weights `method.gamma`, `method.alpha` and `method.beta` of a preset (the defaults below are",
        "each paper's). Every term is reported unweighted as `train/loss_<term>`, the weighted total as",
        "`train/loss`. `<name>+kd` (for example `rrd+kd`) is a method with Hinton's KD added at alpha 1.",
        "A method's options are set as `method.options.<key>` in a preset or with `--set`. Features are",
        "what a method reads besides the logits: `feat` (the penultimate feature), `maps` (every stage's",
        "output), `preact` (the stages' pre-activation outputs). A first stage trains a part of the method",
        "before the run proper; its terms are reported as `first/loss_<term>`.",
        "",
        "| method | gamma/alpha/beta | features | terms | paper |",
        "|---|---|---|---|---|",
    ]
    for info in infos:
        lines.append(
            f"| [`{info.name}`](#{info.name}) | {weights_text(info.weights, ' / ')} | "
            f"{', '.join(info.features) or '-'} | {', '.join(info.losses) or '-'} | "
            f"{cell(short_citation(info.paper))} |"
        )
    for info in infos:
        options = ", ".join(f"`method.options.{k}` ({_option_text(v)})" for k, v in info.options.items())
        lines += [
            "",
            f'<a id="{info.name}"></a>',
            f"## {info.name}: {info.title}",
            "",
            f"- paper: {linked(info.paper)}",
            f"- loss: `{info.formula}`",
            "- default weights: " + ", ".join(f"{k} {info.weights[k]:g}" for k in WEIGHT_KEYS),
            f"- features: {', '.join(info.features) or 'the logits only'}",
            "- loss terms: " + (", ".join(f"`train/loss_{t}`" for t in info.losses) or "none of its own"),
            f"- options: {options or 'none'}",
        ]
        if info.first_stage:
            lines.append(f"- first stage: {info.first_stage}")
        if not info.teacher:
            lines.append("- needs no teacher")
        if info.paper_key:
            lines.append(f"- column in the paper's tables: {info.paper_key}")
        if info.teacher and info.name != "kd":
            lines.append(f"- with KD: `{info.name}{KD_SUFFIX}`")
    return "\n".join(lines) + "\n"
