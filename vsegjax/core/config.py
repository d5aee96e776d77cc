"""Config blocks: each field's default written once, beside the code that reads it.

A block function (``train``, ``adam``, ``input_block``, ...; the data, model and method
blocks live with their readers) returns a block holding every field its reader uses.
Configs are built from them (``configs/common.py``), so every field can be overridden
with ``--config.a.b=``. A task declares the blocks it reads (``Task.config_template``)
and the runner resolves each stage's config against its task's template before anything
is built (``resolve``), so code reads fields and never repeats a default:

- a field the config lacks takes the template's default (a user's own config, or the
  record of a run from an older vsegjax, keeps working);
- a field of a block that no stage's task knows is an error naming it (``unknown``): a
  typo in a config file fails before anything trains, as a mistyped ``--config.a.b=``
  already does in the flag parser;
- a field named in ``WHOLE`` is one value (a dict of free keys, e.g. ``loss_weights``,
  whose absent terms are not computed): taken as the config gives it, never filled.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Iterable, Mapping

import ml_collections

from vsegjax.core.step import Divergence

# Fields whose value is a dict read whole by its reader (which checks its keys).
WHOLE = frozenset({
    "loss_weights",  # loss term -> weight; a term it lacks is not computed
    "flow",          # a flow provider's or decoder's fields, merged by their reader
    "params",        # OpenCV flow parameters
})


def block(defaults: Mapping[str, Any], fields: Mapping[str, Any], name: str
          ) -> ml_collections.ConfigDict:
    """``defaults`` with ``fields`` set; a field ``defaults`` lacks is an error."""
    unknown = sorted(set(fields) - set(defaults))
    if unknown:
        raise TypeError(f"{name}: unknown fields {unknown}; it has {sorted(defaults)}")
    return ml_collections.ConfigDict({**copy.deepcopy(dict(defaults)), **fields})


def mesh(**fields: Any) -> ml_collections.ConfigDict:
    """The device mesh (``core.sharding``): 0 devices = all; ``fsdp`` > 1 shards arrays
    of at least ``fsdp_min_size`` elements over that many devices."""
    return block(dict(num_devices=0, fsdp=1, fsdp_min_size=2 ** 16), fields, "mesh")


def train(num_steps: int | None = None, **fields: Any) -> ml_collections.ConfigDict:
    """The trainer's fields (``core.trainer.train``); ``num_steps`` has no default."""
    return block(dict(
        num_steps=num_steps, log_every=50, checkpoint_every=250, eval_every=0,
        keep_checkpoints=2, init_from="", async_checkpoints=True, report_every_secs=30.0,
        grad_accum_steps=1,
        check_finite_every=0,  # 0 = log_every
        # A loss above factor x the median of the last `window` losses stops the run
        # (core/step.py); factor 0 turns the rule off.
        divergence=dataclasses.asdict(Divergence())), fields, "train")


_OPTIMIZER = dict(
    name="adam",            # adam | adamw | sgd
    learning_rate=None,     # no default
    schedule="cosine",      # constant | poly | cosine, after warmup_steps of linear warm-up
    warmup_steps=50, weight_decay=1e-5,
    b1=0.9, b2=0.999,       # adam, adamw
    momentum=0.9, nesterov=False,  # sgd
    power=0.9, end_learning_rate=0.0,  # poly
    alpha=0.0,              # cosine: the final fraction of the learning rate
    grad_clip_norm=0.0,     # 0 = no clipping
    frozen=(),              # top-level parameter groups that get no update
)


def adam(learning_rate: float | None = None, **fields: Any) -> ml_collections.ConfigDict:
    """Adam with a cosine schedule after a linear warm-up (``core.optim``)."""
    return block(_OPTIMIZER, dict(learning_rate=learning_rate, **fields), "optimizer")


def sgd_poly(learning_rate: float | None = None, power: float = 0.9, **fields: Any
             ) -> ml_collections.ConfigDict:
    """SGD with momentum 0.9, weight decay 1e-4 and the poly schedule (PSPNet, EFC, VPLR)."""
    return block(_OPTIMIZER, dict(dict(name="sgd", schedule="poly", warmup_steps=0,
                                       weight_decay=1e-4), learning_rate=learning_rate,
                                  power=power, **fields), "optimizer")


def augment(**fields: Any) -> ml_collections.ConfigDict:
    """Resize to the working size, random scale, crop, flip and colour jitter
    (``data.augment.Augment.from_config``)."""
    return block(dict(resize=(64, 128), scale_range=(0.8, 1.25), crop_size=(64, 128),
                      hflip=True, color=(0.1, 0.1, 0.1), occlusion_out_of_view=True),
                 fields, "input.augment")


def input_block(batch_size: int = 8, **fields: Any) -> ml_collections.ConfigDict:
    """The training input (``core.inputs``): ``label_frame`` is "annotated", "random" or a
    frame index; ``class_uniform`` samples snippets by class (VPLR)."""
    out = block(dict(batch_size=batch_size, label_frame="annotated", worker_count=0,
                     class_uniform=False, train_split="train", augment=None),
                fields, "input")
    if out.augment is None:
        out.augment = augment()
    return out


def eval_block(**fields: Any) -> ml_collections.ConfigDict:
    """Evaluation: the split, how many snippets (0 = all), the batch and the panels drawn."""
    return block(dict(split="validation", num_snippets=0, batch_size=8, num_panels=4),
                 fields, "eval")


def engine_template() -> ml_collections.ConfigDict:
    """The blocks the core reads for every task (the data block is the data layer's)."""
    return ml_collections.ConfigDict(dict(
        seed=0, variant="", mesh=mesh(), train=train(), optimizer=adam(),
        input=input_block(), eval=eval_block()))


def extend(base: ml_collections.ConfigDict, **blocks: Any) -> ml_collections.ConfigDict:
    """``base`` (a template) with blocks added or fields of its blocks added: a dict
    value for an existing block adds (or replaces) those fields."""
    out = ml_collections.ConfigDict(base.to_dict())
    for name, value in blocks.items():
        if name in out and isinstance(out[name], ml_collections.ConfigDict) and \
                isinstance(value, Mapping):
            merged = out[name].to_dict()
            merged.update(value.to_dict() if hasattr(value, "to_dict") else dict(value))
            out[name] = ml_collections.ConfigDict(merged)
        else:
            out[name] = value
    return out


def _is_block(value: Any) -> bool:
    return isinstance(value, (Mapping, ml_collections.ConfigDict))


def resolve(config: Any, template: Any) -> ml_collections.ConfigDict:
    """``config`` with every field it lacks taken from ``template`` (recursively; fields
    in ``WHOLE`` and blocks the template lacks are kept as they are)."""
    out = config.to_dict() if hasattr(config, "to_dict") else copy.deepcopy(dict(config))
    _fill(out, template.to_dict() if hasattr(template, "to_dict") else dict(template))
    return ml_collections.ConfigDict(out)


def _fill(out: dict, template: dict) -> None:
    for key, default in template.items():
        if key not in out:
            out[key] = copy.deepcopy(default)
        elif key not in WHOLE and isinstance(out[key], dict) and isinstance(default, dict):
            _fill(out[key], default)


def unknown(config: Any, templates: Iterable[Any], ignore: Iterable[str] = ()
            ) -> list[str]:
    """Dotted names of ``config``'s fields no template has, inside the blocks some
    template has (top-level names in ``ignore`` are not checked)."""
    known: dict = {}
    for t in templates:
        _union(known, t.to_dict() if hasattr(t, "to_dict") else dict(t))
    tree = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return _unknown({k: v for k, v in tree.items() if k not in set(ignore)}, known, "")


def _union(known: dict, template: dict) -> None:
    for key, value in template.items():
        if isinstance(value, dict) and key not in WHOLE and isinstance(known.get(key), dict):
            _union(known[key], value)
        elif key not in known or not isinstance(known[key], dict):
            known[key] = copy.deepcopy(value) if isinstance(value, dict) else value


def _unknown(tree: dict, known: dict, prefix: str) -> list[str]:
    out = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            out.append(dotted)
        elif key not in WHOLE and isinstance(value, dict) and isinstance(known[key], dict):
            out.extend(_unknown(value, known[key], dotted + "."))
    return out


# A stage's own fields (the rest are overrides of blocks): whether it runs and where it
# starts from ("previous": the stage before it; "": fresh; a stage's name; a run folder).
STAGE = dict(enabled=True, init_from="previous")


def stage(task: str, *, init_from: str = STAGE["init_from"], enabled: bool = STAGE["enabled"],
          **overrides: Any) -> ml_collections.ConfigDict:
    """A stage (``core.experiment``): its task, where it starts from, whether it runs, and
    overrides of top-level blocks, e.g. ``train=dict(num_steps=400)``."""
    out = ml_collections.ConfigDict(dict(task=task, init_from=init_from, enabled=enabled))
    for name, fields in overrides.items():
        out[name] = ml_collections.ConfigDict(dict(fields))
    return out


def set_stages(c: ml_collections.ConfigDict, *stages: tuple[str, ml_collections.ConfigDict]
               ) -> ml_collections.ConfigDict:
    """``c.stages`` (name -> stage) and ``c.stage_order``, the order they run in."""
    c.stages = ml_collections.ConfigDict({name: s for name, s in stages})
    c.stage_order = tuple(name for name, _ in stages)
    return c
