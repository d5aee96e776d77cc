"""A static segmenter alone on the synthetic dataset (a baseline for every video method).

    python -m vsegjax.main --config=configs/static_synthetic.py --workdir=runs/static_synthetic

One stage (``static``): the small segmenter on any labelled frame of each snippet,
1200 steps of batch 8 at 64x128. It should reach a validation mIoU of about 0.68 (the
static stage of the main job, configs/grfp_synthetic.py, is this run: 0.677).
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
    c = common.base(num_steps=1200)
    c.input.label_frame = "random"
    c.train.eval_every = 600
    return common.set_stages(c, ("static", common.stage("static")))
