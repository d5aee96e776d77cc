"""VPLR with the paper's setup on Cityscapes sequences (seeds/001, sec. 4).

DeepLabv3+ (here on a ResNet-101, output stride 8; the paper's WideResNet38 is not in the
model zoo), SGD momentum 0.9, weight decay 1e-4, poly learning rate 0.002 (power 1.0),
800x800 crops, batch 16, class-uniform sampling, joint propagation from each finely
labelled 20th frame to +-k frames (k <= 3, the paper's best length) with the video
reconstruction model's motion, and boundary label relaxation (3x3). Variants a-d as in
``vplr_synthetic.py``. Needs ``cityscapes_sequences`` (data_prep/cityscapes.py) and a video
reconstruction run on them (``vplr.sdc_workdir``).

    python -m vsegjax.main --config=configs/vplr_cityscapes.py:d --workdir=runs/vplr_cs_d \
        --config.vplr.sdc_workdir=runs/sdc_cityscapes
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


def get_config(variant: str = "d") -> ml_collections.ConfigDict:
    c = _load("vplr_synthetic").get_config(variant)
    classes = _load("grfp_cityscapes").CITYSCAPES_CLASSES
    c.data = ml_collections.ConfigDict(dict(
        name="cityscapes_sequences", config="default", data_dir="~/tensorflow_datasets",
        build_if_missing=False, num_workers=0, class_names=list(classes)))
    c.input.batch_size = 16 if variant == "a" else 8
    c.input.worker_count = 8
    c.input.class_uniform = True
    c.input.augment = ml_collections.ConfigDict(dict(
        resize=None, scale_range=(0.5, 2.0), crop_size=(800, 800), hflip=True, color=None))
    c.model = ml_collections.ConfigDict(dict(
        backbone="resnet101", head="deeplabv3plus", num_classes=len(classes),
        output_stride=8, width=32, dtype="bfloat16"))
    c.vplr.update(dict(motion="sdc", k=3, propagated_batch_size=8))
    c.train.update(dict(num_steps=90_000, log_every=100, checkpoint_every=2000))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="sgd", learning_rate=0.002, momentum=0.9, schedule="poly", power=1.0,
        warmup_steps=0, weight_decay=1e-4))
    return c
