"""GRFP on real street video: CamVid's labelled 0016E5 sequence, on a CPU (docs/grfp_camvid.md).

    python -m vsegjax.main --config=configs/grfp_camvid.py --workdir=runs/grfp_camvid \\
        --config.data.manual_dir=/path/to/CamVid

Stage ``static`` is ``configs/camvid_static.py``: SmallSegNet from scratch on CamVid train
(367 frames of other drives), 5000 steps at 180x240. Stage ``grfp`` freezes it and trains
the forward STGRU (7x7) on 5-frame snippets of the labelled val sequence, the labelled
frame last, with DIS flow computed on the host.

The split is in time (``vsegjax/data/camvid_sequence.py``): CamVid val is 101 frames of
drive 0016E5 (every second frame of the 30 fps video, all labelled); its first 50 frames
(0016E5_07959 .. 0016E5_08057) give the 46 training snippets and the remaining 51
(0016E5_08059 .. 0016E5_08159) the 47 held-out snippets the report scores. No snippet
crosses the boundary. The forward-backward model does not fit this split: its snippets
would need frames after the labelled one, and the last labelled frames would lose them.

A second seed of the GRFP stage reuses the static stage of the first run:

    python -m vsegjax.main --config=configs/grfp_camvid.py --workdir=runs/grfp_camvid_seed1 \\
        --config.seed=1 --config.stages.static.enabled=False \\
        --config.stages.grfp.init_from=runs/grfp_camvid/static
"""

import ml_collections

from configs import camvid_static, common
from vsegjax.methods.grfp import config as grfp_config


def get_config() -> ml_collections.ConfigDict:
    c = camvid_static.get_config()  # the static stage's blocks, unchanged
    c.input.window = (4, 0)  # T = 5 frames ending at the labelled one
    c.flow = grfp_config.flow_block("dis", dis_preset="medium", num_workers=0)
    # vsegjax's per-class update gate (W_xz, W_hz C -> C; "shared" = the authors' C -> 1)
    # and the STGRU's computation dtype (docs/grfp.md measures both choices).
    c.grfp = grfp_config.grfp_block(mode="forward", update_gate="per_class", dtype="float32",
                                    loss_weights=dict(L_fwd=1.0))
    return common.set_stages(
        c, ("static", c.stages.static),
        ("grfp", common.stage(
            "grfp",
            data=dict(name="camvid_sequence", config="t5_split50"),
            # The snippets are already consecutive frames; class-uniform sampling is for
            # single labelled frames.
            input=dict(batch_size=4, class_uniform=False, label_frame="annotated"),
            train=dict(num_steps=300, eval_every=0, checkpoint_every=100, log_every=25),
            # The paper's STGRU optimiser (Adam, beta1 = 0.95, beta2 = 0.99), as the main job.
            optimizer=dict(learning_rate=1e-3, b1=0.95, b2=0.99, warmup_steps=20,
                           weight_decay=0.0),
            eval=dict(split="heldout", batch_size=4, num_panels=12))))
