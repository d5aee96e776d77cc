"""Blocks every config builds on, and the stage helper (vsegjax/core/experiment.py).

A config is ``base()`` (seed, mesh, data, input, model, train, optimizer, eval) with its
method's blocks added and its stages declared by ``set_stages``. The defaults are the
synthetic dataset at 64x128 and the small segmenter, sized for a 2-core CPU.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from vsegjax.data import default_data_dir, synthetic
from vsegjax.data.labels import CITYSCAPES_CLASSES

def data(name: str = "synthetic_video", config: str = "default",
         class_names: tuple[str, ...] = synthetic.CLASSES, **fields: Any
         ) -> ml_collections.ConfigDict:
    """A TFDS dataset (``vsegjax.data.datasets``); built on first use if it can be."""
    block = dict(name=name, config=config, data_dir=default_data_dir(),
                 build_if_missing=True, num_workers=0, class_names=list(class_names))
    block.update(fields)
    return ml_collections.ConfigDict(block)


def cityscapes_data() -> ml_collections.ConfigDict:
    """``cityscapes_sequences``, built by data_prep/cityscapes.py from a download."""
    return data("cityscapes_sequences", class_names=CITYSCAPES_CLASSES, build_if_missing=False)


def augment(**fields: Any) -> ml_collections.ConfigDict:
    """Resize to the working size, random scale, crop, flip and colour jitter."""
    block = dict(resize=(64, 128), scale_range=(0.8, 1.25), crop_size=(64, 128), hflip=True,
                 color=(0.1, 0.1, 0.1), occlusion_out_of_view=True)
    block.update(fields)
    return ml_collections.ConfigDict(block)


def input_block(batch_size: int = 8, **fields: Any) -> ml_collections.ConfigDict:
    block = dict(batch_size=batch_size, label_frame="annotated", worker_count=0,
                 class_uniform=False, train_split="train")
    block.update(fields)
    out = ml_collections.ConfigDict(block)
    out.augment = augment()
    return out


def model(num_classes: int = len(synthetic.CLASSES), **fields: Any
          ) -> ml_collections.ConfigDict:
    """The small static segmenter (``vsegjax.models.segmenter``)."""
    block = dict(backbone="small", head="simple", num_classes=num_classes, output_stride=8,
                 width=32, dtype="float32",
                 pretrained="")  # a ResNet checkpoint (vsegjax.models.convert) or .pth
    block.update(fields)
    return ml_collections.ConfigDict(block)


def train(num_steps: int, **fields: Any) -> ml_collections.ConfigDict:
    """The trainer's fields (``vsegjax.core.trainer.train``)."""
    block = dict(num_steps=num_steps, log_every=50, checkpoint_every=250, eval_every=0,
                 keep_checkpoints=2, init_from="", async_checkpoints=True,
                 report_every_secs=30.0, grad_accum_steps=1,
                 check_finite_every=0,  # 0 = log_every
                 # A loss above factor x the median of the last `window` losses stops the
                 # run (vsegjax/core/step.py); factor 0 turns the rule off.
                 divergence=dict(factor=100.0, window=50, min_reference=0.01))
    block.update(fields)
    return ml_collections.ConfigDict(block)


def adam(learning_rate: float, **fields: Any) -> ml_collections.ConfigDict:
    """Adam with a cosine schedule after a linear warm-up (``vsegjax.core.optim``)."""
    block = dict(name="adam", learning_rate=learning_rate, schedule="cosine",
                 warmup_steps=50, weight_decay=1e-5)
    block.update(fields)
    return ml_collections.ConfigDict(block)


def sgd_poly(learning_rate: float, power: float = 0.9, **fields: Any
             ) -> ml_collections.ConfigDict:
    """SGD with momentum 0.9, weight decay 1e-4 and the poly schedule (PSPNet, EFC, VPLR)."""
    block = dict(name="sgd", learning_rate=learning_rate, momentum=0.9, schedule="poly",
                 power=power, warmup_steps=0, weight_decay=1e-4)
    block.update(fields)
    return ml_collections.ConfigDict(block)


def eval_block(**fields: Any) -> ml_collections.ConfigDict:
    block = dict(split="validation", num_snippets=0, batch_size=8, num_panels=4)
    block.update(fields)
    return ml_collections.ConfigDict(block)


def base(num_steps: int, learning_rate: float = 3e-3) -> ml_collections.ConfigDict:
    """The blocks every training config has; its stages start from them."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    # 0 = all devices; fsdp > 1 shards arrays of >= fsdp_min_size elements over that many.
    c.mesh = ml_collections.ConfigDict(dict(num_devices=0, fsdp=1, fsdp_min_size=2 ** 16))
    c.data = data()
    c.input = input_block()
    c.model = model()
    c.train = train(num_steps)
    c.optimizer = adam(learning_rate)
    c.eval = eval_block()
    return c


def stage(task: str, *, init_from: str = "previous", enabled: bool = True,
          **overrides: Any) -> ml_collections.ConfigDict:
    """A stage: its task, where it starts from ("previous", "", a stage or a run folder),
    and overrides of top-level blocks, e.g. ``train=dict(num_steps=400)``."""
    block = ml_collections.ConfigDict(dict(task=task, init_from=init_from, enabled=enabled))
    for name, fields in overrides.items():
        block[name] = ml_collections.ConfigDict(dict(fields))
    return block


def set_stages(c: ml_collections.ConfigDict, *stages: tuple[str, ml_collections.ConfigDict]
               ) -> ml_collections.ConfigDict:
    """``c.stages`` (name -> stage) and ``c.stage_order``, the order they run in."""
    c.stages = ml_collections.ConfigDict({name: s for name, s in stages})
    c.stage_order = tuple(name for name, _ in stages)
    return c
