"""Warp-Refine on the synthetic dataset (CPU, minutes).

    python -m vsegjax.main --config=configs/warp_refine_synthetic.py --workdir=runs/warp_refine

Trains the static segmenter (the semantic prior) on each snippet's labelled frame, then the
refiner by cycle consistency from those labels alone (the other frames' labels are dropped),
with DIS flow computed on the host, and writes ``propagation.json`` / ``propagation.png``:
mIoU of copy, flow and warp_refine propagation vs. distance k on longer rendered videos.
"""

import ml_collections

from vsegjax.data import synthetic


def _train(num_steps: int) -> dict:
    return dict(num_steps=num_steps, log_every=50, checkpoint_every=250, eval_every=0,
                keep_checkpoints=2, init_from="", async_checkpoints=True,
                report_every_secs=30.0)


def _adam(lr: float, **kw) -> dict:
    return dict(name="adam", learning_rate=lr, schedule="cosine", warmup_steps=50,
                weight_decay=1e-5, **kw)


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "warp_refine"
    c.seed = 0
    c.mesh = ml_collections.ConfigDict(dict(num_devices=0))
    c.data = ml_collections.ConfigDict(dict(
        name="synthetic_video", config="default", data_dir="~/tensorflow_datasets",
        build_if_missing=True, num_workers=0, class_names=list(synthetic.CLASSES)))
    c.input = ml_collections.ConfigDict(dict(batch_size=4, worker_count=0, class_uniform=False,
                                             train_split="train", label_frame="annotated"))
    c.input.augment = ml_collections.ConfigDict(dict(
        resize=(64, 128), scale_range=(0.8, 1.25), crop_size=(64, 128), hflip=True,
        color=(0.1, 0.1, 0.1)))
    c.model = ml_collections.ConfigDict(dict(
        backbone="small", head="simple", num_classes=len(synthetic.CLASSES), output_stride=8,
        width=32, dtype="float32"))
    c.warp_refine = ml_collections.ConfigDict(dict(
        k=3,              # cycle length: 3 steps forward, 3 back (snippets have 5 frames)
        flow="dis",       # host flow for training and evaluation (not the exact flow)
        labels="annotated",  # sparse: only the window's first frame keeps its label
        refiner_width=32, refiner_depth=2,
        # L_warp > 0 pulls the refiner towards plain soft warping (off, as in the paper).
        loss_weights=dict(L_cycle=1.0, L_direct=1.0, L_warp=0.0, L_prior=0.0)))
    c.train = ml_collections.ConfigDict(_train(800))
    # The prior is the static run's segmenter, kept fixed while the refiner learns.
    c.optimizer = ml_collections.ConfigDict(_adam(1e-3, frozen=("static",)))
    c.static_stage = ml_collections.ConfigDict(dict(train=_train(1500),
                                                    optimizer=_adam(3e-3)))
    c.eval = ml_collections.ConfigDict(dict(split="validation", num_snippets=0, batch_size=8,
                                            num_videos=24, num_frames=9, video_seed=7,
                                            # a configs/sdc_synthetic.py run adds "sdc"
                                            sdc_workdir=""))
    return c
