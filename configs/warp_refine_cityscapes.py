"""Warp-Refine on Cityscapes sequences (seeds/002): refiner trained by cycle consistency
from the finely labelled 20th frame of each 30-frame snippet, with a DeepLabv3+ prior.

The paper warps with FlowNet2 flow; DIS (OpenCV) stands in here (any FlowNetS run can be
plugged into ``vsegjax.autolabel --flow``). Prior: DeepLabv3+ on ResNet-101 trained alone
on the labelled frames first (``static_stage``), then kept fixed.

    python -m vsegjax.main --config=configs/warp_refine_cityscapes.py --workdir=runs/wr_cs
"""

import importlib.util
import os

import ml_collections


def _load(name: str):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config() -> ml_collections.ConfigDict:
    c = _load("warp_refine_synthetic").get_config()
    classes = _load("grfp_cityscapes").CITYSCAPES_CLASSES
    c.data = ml_collections.ConfigDict(dict(
        name="cityscapes_sequences", config="default", data_dir="~/tensorflow_datasets",
        build_if_missing=False, num_workers=0, class_names=list(classes)))
    c.input.batch_size = 8
    c.input.worker_count = 8
    c.input.augment = ml_collections.ConfigDict(dict(
        resize=(512, 1024), scale_range=(0.75, 1.5), crop_size=(512, 512), hflip=True,
        color=None))
    c.model = ml_collections.ConfigDict(dict(
        backbone="resnet101", head="deeplabv3plus", num_classes=len(classes),
        output_stride=8, width=32, dtype="bfloat16"))
    c.warp_refine.update(dict(k=5, refiner_width=64, refiner_depth=3))
    c.train.update(dict(num_steps=40_000, log_every=100, checkpoint_every=2000))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="sgd", learning_rate=0.01, momentum=0.9, schedule="poly", power=0.9,
        warmup_steps=0, weight_decay=1e-4, frozen=("static",)))
    c.static_stage = ml_collections.ConfigDict(dict(
        train=dict(c.train.to_dict(), num_steps=90_000),
        optimizer=dict(c.optimizer.to_dict(), frozen=())))
    c.eval.update(dict(num_videos=0))
    return c
