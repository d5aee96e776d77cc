"""Blocks every config builds on, and the stage helper (vsegjax/core/experiment.py).

A config is ``base()`` (seed, mesh, data, input, model, train, optimizer, eval) with its
method's blocks added and its stages declared by ``set_stages``. The defaults are the
synthetic dataset at 64x128 and the small segmenter, sized for a 2-core CPU.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from vsegjax.core import config as core
from vsegjax.data import synthetic
from vsegjax.data.datasets import data_block as data
from vsegjax.data.labels import CITYSCAPES_CLASSES
from vsegjax.models.segmenter import model_block

# The blocks, with their defaults where their readers are (vsegjax.core.config).
augment, input_block, eval_block = core.augment, core.input_block, core.eval_block
train, adam, sgd_poly = core.train, core.adam, core.sgd_poly
stage, set_stages = core.stage, core.set_stages


def cityscapes_data() -> ml_collections.ConfigDict:
    """``cityscapes_sequences``, built by data_prep/cityscapes.py from a download."""
    return data("cityscapes_sequences", class_names=CITYSCAPES_CLASSES, build_if_missing=False)


def model(num_classes: int = len(synthetic.CLASSES), **fields: Any
          ) -> ml_collections.ConfigDict:
    """The small static segmenter (``vsegjax.models.segmenter``) unless ``fields`` say
    otherwise; ``pretrained``: a ResNet checkpoint (vsegjax.models.convert) or .pth."""
    return model_block(num_classes, **fields)


def base(num_steps: int, learning_rate: float = 3e-3) -> ml_collections.ConfigDict:
    """The blocks every training config has; its stages start from them."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.mesh = core.mesh()
    c.data = data()
    c.input = input_block()
    c.model = model()
    c.train = train(num_steps)
    c.optimizer = adam(learning_rate)
    c.eval = eval_block()
    return c
