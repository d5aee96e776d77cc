"""GRFP with the paper's setup on Cityscapes sequences (GRFP paper, sections 3.3-4).

    python -m vsegjax.main --config=configs/grfp_cityscapes.py --workdir=runs/grfp_cityscapes \\
        --config.flow.checkpoint=<a trained FlowNetS run>

Static net: ResNet-50 PSPNet (output stride 8); forward model over T = 5 frames (the
labelled 20th frame and the 4 before it); STGRU 7x7; Adam(beta1 = 0.95, beta2 = 0.99,
lr 2e-5) for the STGRU; 512x512 training crops; evaluation at full resolution
(1024x2048). Flow: learned FlowNetS, frozen. The paper gains 0.4 class IoU points over
PSP on the Cityscapes test set (its Table 2); not measured here (no GPU, and it needs
``cityscapes_sequences`` built from a download: data_prep/cityscapes.py).
"""

import ml_collections

from configs import common, grfp_synthetic
from vsegjax.methods.grfp import config as grfp_config

CITYSCAPES_CLASSES = common.CITYSCAPES_CLASSES


def get_config() -> ml_collections.ConfigDict:
    c = grfp_synthetic.get_config()
    c.data = common.cityscapes_data()

    c.input.batch_size = 16  # one crop (or window) per chip of a v5e-16 / v4-32
    c.input.window = (4, 0)  # T = 5: the labelled frame and the 4 before it
    c.input.label_frame = "annotated"
    c.input.worker_count = 8
    c.input.augment = common.augment(resize=None, scale_range=(0.5, 2.0), crop_size=(512, 512),
                                     color=None)
    c.model = common.model(len(CITYSCAPES_CLASSES), backbone="resnet50", head="psp",
                           dtype="bfloat16")
    c.flow = grfp_config.flow_block("flownet", checkpoint="", trainable=False, width=1.0)

    c.grfp.mode = "forward"
    c.grfp.remat = True  # T = 5 frames of a ResNet-50 at 512x512
    c.grfp.train_static = True  # the paper's default refines the static net
    c.grfp.loss_weights = dict(L_fwd=1.0)
    c.grfp.dtype = "bfloat16"  # as the static net; no accuracy cost on the main job (docs/stgru.md)

    c.train.num_steps = 90_000
    c.optimizer = common.sgd_poly(0.01)
    c.stages.grfp.train.num_steps = 20_000
    c.stages.grfp.train.checkpoint_every = 1000
    c.stages.grfp.optimizer = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=2e-5, b1=0.95, b2=0.99, schedule="constant",
        warmup_steps=0, weight_decay=0.0))
    c.eval = common.eval_block(batch_size=1, num_panels=10)
    return c
