"""GRFP on the synthetic dataset, sized for a 2-core CPU: the main job.

    python -m vsegjax.main --config=configs/grfp_synthetic.py --workdir=runs/grfp_synthetic

Stage ``static`` trains the small static segmenter on single labelled frames (1200
steps); stage ``grfp`` starts from it and trains the forward-backward STGRU on 7-frame
windows (4 before the labelled frame, 2 after) with the static net and the Farnebäck
flow frozen (400 steps). Working resolution 64x128 (the data is 128x256). It should
reach a validation class mIoU of 0.678 static, 0.696 GRFP forward and 0.698 GRFP
forward-backward (docs/grfp.md), in about 10 minutes on 2 CPU cores.
"""

import ml_collections

from configs import common
from vsegjax.methods.grfp import config as grfp_config


def get_config() -> ml_collections.ConfigDict:
    c = common.base(num_steps=1200)  # the defaults are the static stage's
    c.input.window = (4, 2)  # frames before / after the labelled frame (T = 7)
    c.input.label_frame = "random"  # static stage: any labelled frame of a snippet
    c.train.eval_every = 600
    c.flow = grfp_config.flow_block("farneback", num_workers=0)
    # vsegjax's per-class update gate (W_xz, W_hz C -> C; "shared" = the authors' C -> 1)
    # and the STGRU's computation dtype (docs/grfp.md measures both choices).
    c.grfp = grfp_config.grfp_block(update_gate="per_class", dtype="float32")
    c.eval.num_panels = 40
    return common.set_stages(
        c, ("static", common.stage("static")),
        # The paper's STGRU optimiser: Adam with beta1 = 0.95, beta2 = 0.99.
        ("grfp", common.stage("grfp", train=dict(num_steps=400, eval_every=200),
                              optimizer=dict(learning_rate=1e-3, b1=0.95, b2=0.99,
                                             warmup_steps=20, weight_decay=0.0))))
