"""Warp-Refine on the synthetic dataset (CPU, minutes).

    python -m vsegjax.main --config=configs/warp_refine_synthetic.py --workdir=runs/warp_refine

Stage ``static`` trains the segmenter (the semantic prior) on each snippet's labelled
frame (1500 steps); stage ``refiner`` trains the refiner by cycle consistency from those
labels alone (the other frames' labels are dropped), with DIS flow computed on the host
and the prior frozen (800 steps). ``eval_metrics.json`` and ``propagation.png`` give the
mIoU of copy, flow and warp_refine propagation vs. distance k on longer rendered videos
(docs/warp_refine.md has the table).
"""

import ml_collections

from configs import common
from vsegjax.methods.warp_refine import config as wr_config


def get_config() -> ml_collections.ConfigDict:
    c = common.base(num_steps=800, learning_rate=1e-3)  # the defaults are the refiner's
    c.input.batch_size = 4
    # The prior is the static stage's segmenter, kept fixed while the refiner learns.
    c.optimizer.frozen = ("static",)
    # Cycles of 3 steps forward and 3 back (snippets have 5 frames), DIS flow (not the
    # exact flow), sparse labels: only the window's first frame keeps its label.
    c.warp_refine = wr_config.warp_refine_block(k=3, flow="dis", labels="annotated")
    c.eval = wr_config.eval_block(num_videos=24, num_frames=9, video_seed=7)
    return common.set_stages(
        c, ("static", common.stage("static", train=dict(num_steps=1500),
                                   optimizer=dict(learning_rate=3e-3, frozen=()))),
        ("refiner", common.stage("warp_refine")))
