"""VPLR with the paper's setup on Cityscapes sequences (seeds/001, sec. 4).

    python -m vsegjax.main --config=configs/vplr_cityscapes.py:d --workdir=runs/vplr_cs_d \\
        --config.vplr.sdc_workdir=runs/sdc_cityscapes

DeepLabv3+ (here on a ResNet-101, output stride 8; the paper's WideResNet38 is not in the
model zoo), SGD momentum 0.9, weight decay 1e-4, poly learning rate 0.002 (power 1.0),
800x800 crops, batch 16, class-uniform sampling, joint propagation from each finely
labelled 20th frame to +-k frames (k <= 3, the paper's best length) with the video
reconstruction model's motion, and boundary label relaxation (3x3). Variants a-d as in
``vplr_synthetic.py``. The paper's ablation goes from 79.46 (baseline) to 81.35 mIoU
on Cityscapes val (video reconstruction + joint propagation + relaxation at k = 3);
not measured here (no GPU). Needs ``cityscapes_sequences``
(data_prep/cityscapes.py) and a video reconstruction run on them (``vplr.sdc_workdir``).
"""

import ml_collections

from configs import common, vplr_synthetic


def get_config(variant: str = "d") -> ml_collections.ConfigDict:
    c = vplr_synthetic.get_config(variant)
    c.data = common.cityscapes_data()
    c.input.batch_size = 16 if variant == "a" else 8
    c.input.worker_count = 8
    c.input.class_uniform = True
    c.input.augment = common.augment(resize=None, scale_range=(0.5, 2.0), crop_size=(800, 800),
                                     color=None)
    c.model = common.model(len(common.CITYSCAPES_CLASSES), backbone="resnet101",
                           head="deeplabv3plus", dtype="bfloat16")
    c.vplr.update(dict(motion="sdc", k=3, propagated_batch_size=8))
    c.train.update(dict(num_steps=90_000, log_every=100, checkpoint_every=2000))
    c.optimizer = common.sgd_poly(0.002, power=1.0)
    return c
