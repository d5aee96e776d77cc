"""Range checks of a stage's numeric config fields, run before anything is built.

A negative step count, a zero batch or a learning rate of 0 used to run (an untrained
model evaluated, exit 0) or fail deep inside the pipeline. Each rule names a field by
its dotted path inside a stage's merged config; ``check_stage`` reports the first
violation as the field the user set (``stages.<name>.<path>`` when the stage overrides
it, else the top-level path) with the allowed range.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

Rule = tuple[str, Callable[[Any], bool]]


def _int(lo: int) -> Rule:
    return (f"an int >= {lo}",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo)


def _float(lo: float, *, strict: bool = False, hi: float | None = None) -> Rule:
    def ok(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return (v > lo if strict else v >= lo) and (hi is None or v < hi)
    above = f"> {lo:g}" if strict else f">= {lo:g}"
    return (f"a finite number {above}" + (f" and < {hi:g}" if hi is not None else ""), ok)


def _size(v: Any) -> bool:
    return (isinstance(v, (tuple, list)) and len(v) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v))


SIZE: Rule = ("None or two ints >= 1 (height, width)", lambda v: v is None or _size(v))
SCALE_RANGE: Rule = ("None or two numbers 0 < low <= high", lambda v: v is None or (
    isinstance(v, (tuple, list)) and len(v) == 2
    and all(isinstance(x, (int, float)) and math.isfinite(x) for x in v) and 0 < v[0] <= v[1]))

# Dotted path -> (what is allowed, check). A missing field is not checked (not every
# task reads every block); a "*" matches every field of that block.
RULES: dict[str, Rule] = {
    "train.num_steps": _int(1),
    "train.log_every": _int(0),
    "train.checkpoint_every": _int(0),
    "train.eval_every": _int(0),
    "train.keep_checkpoints": _int(1),
    "train.grad_accum_steps": _int(1),
    "train.check_finite_every": _int(0),
    "train.report_every_secs": _float(0, strict=True),
    "train.divergence.factor": ("0 (off) or a finite number > 1", lambda v: (
        not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
        and (v == 0 or v > 1))),
    "train.divergence.window": _int(1),
    "train.divergence.min_reference": _float(0),
    "input.batch_size": _int(1),
    "input.augment.resize": SIZE,
    "input.augment.crop_size": SIZE,
    "input.augment.scale_range": SCALE_RANGE,
    "eval.batch_size": _int(1),
    "eval.num_snippets": _int(0),
    "eval.num_panels": _int(0),
    "optimizer.learning_rate": _float(0, strict=True),
    "optimizer.warmup_steps": _int(0),
    "optimizer.weight_decay": _float(0),
    "optimizer.momentum": _float(0, hi=1),
    "optimizer.b1": _float(0, hi=1),
    "optimizer.b2": _float(0, hi=1),
    "model.num_classes": _int(1),
    "model.width": _int(1),
    "mesh.num_devices": _int(0),
    "mesh.fsdp": _int(1),
    "grfp.kernel_size": _int(1),
    "grfp.loss_weights.*": _float(0),
    "efc.loss_weights.*": _float(0),
    "sdc.loss_weights.*": _float(0),
    "warp_refine.loss_weights.*": _float(0),
}


def _lookup(tree: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    """The (path, value) pairs ``path`` names in ``tree`` ("*" = every key)."""
    if not path:
        return [([], tree)]
    if not isinstance(tree, Mapping) and not hasattr(tree, "keys"):
        return []
    head, rest = path[0], path[1:]
    keys = list(tree.keys()) if head == "*" else [head] if head in tree else []
    return [([k] + p, v) for k in keys for p, v in _lookup(tree[k], rest)]


def check_stage(cfg: Any, spec: Any, where: str) -> None:
    """Raises ``ValueError`` naming the first field of ``cfg`` (a stage's merged config)
    out of range; ``spec`` is the stage's own block of overrides, at ``where``."""
    for pattern, (allowed, ok) in RULES.items():
        for path, value in _lookup(cfg, pattern.split(".")):
            if ok(value):
                continue
            dotted = ".".join(path)
            overridden = bool(_lookup(spec, path))
            field = f"{where}.{dotted}" if overridden else dotted
            raise ValueError(f"config field {field}: {allowed}; got {value!r}")
