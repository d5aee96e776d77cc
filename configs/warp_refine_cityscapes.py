"""Warp-Refine on Cityscapes sequences (seeds/002): refiner trained by cycle consistency
from the finely labelled 20th frame of each 30-frame snippet, with a DeepLabv3+ prior.

    python -m vsegjax.main --config=configs/warp_refine_cityscapes.py --workdir=runs/wr_cs

The paper warps with FlowNet2 flow; DIS (OpenCV) stands in here (any FlowNetS run can be
plugged into ``vsegjax.autolabel --flow``). Prior: DeepLabv3+ on ResNet-101 trained alone
on the labelled frames first (stage ``static``), then kept fixed. Not measured here (no
GPU); needs ``cityscapes_sequences`` (data_prep/cityscapes.py).
"""

import ml_collections

from configs import common, warp_refine_synthetic


def get_config() -> ml_collections.ConfigDict:
    c = warp_refine_synthetic.get_config()
    c.data = common.cityscapes_data()
    c.input.batch_size = 16  # one window per chip of a v5e-16 / v4-32
    c.input.worker_count = 8
    c.input.augment = common.augment(resize=(512, 1024), scale_range=(0.75, 1.5),
                                     crop_size=(512, 512), color=None)
    c.model = common.model(len(common.CITYSCAPES_CLASSES), backbone="resnet101",
                           head="deeplabv3plus", dtype="bfloat16")
    c.warp_refine.update(dict(k=5, refiner_width=64, refiner_depth=3))
    c.train.update(dict(num_steps=40_000, log_every=100, checkpoint_every=2000))
    c.optimizer = common.sgd_poly(0.01, frozen=("static",))
    c.stages.static.train.num_steps = 90_000
    c.stages.static.optimizer = ml_collections.ConfigDict(dict(frozen=()))
    c.eval.update(dict(num_videos=0))
    return c
