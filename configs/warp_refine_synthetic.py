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


def get_config() -> ml_collections.ConfigDict:
    c = common.base(num_steps=800, learning_rate=1e-3)  # the defaults are the refiner's
    c.input.batch_size = 4
    # The prior is the static stage's segmenter, kept fixed while the refiner learns.
    c.optimizer.frozen = ("static",)
    c.warp_refine = ml_collections.ConfigDict(dict(
        k=3,              # cycle length: 3 steps forward, 3 back (snippets have 5 frames)
        flow="dis",       # host flow for training and evaluation (not the exact flow)
        labels="annotated",  # sparse: only the window's first frame keeps its label
        refiner_width=32, refiner_depth=2,
        # L_warp > 0 pulls the refiner towards plain soft warping (off, as in the paper).
        loss_weights=dict(L_cycle=1.0, L_direct=1.0, L_warp=0.0, L_prior=0.0)))
    c.eval = common.eval_block(num_videos=24, num_frames=9, video_seed=7,
                               # a configs/sdc_synthetic.py run adds "sdc"
                               sdc_workdir="")
    return common.set_stages(
        c, ("static", common.stage("static", train=dict(num_steps=1500),
                                   optimizer=dict(learning_rate=3e-3, frozen=()))),
        ("refiner", common.stage("warp_refine")))
