"""GRFP on the synthetic dataset, sized for a 2-core CPU (both stages + evaluation).

    python -m vsegjax.main --config=configs/grfp_synthetic.py --workdir=runs/grfp_synthetic

Stage 1 trains the small static segmenter on single labelled frames; stage 2 trains the
forward-backward STGRU on 7-frame windows (4 before the labelled frame, 2 after) with
the static net and the flow frozen. Working resolution 64x128 (the data is 128x256).
"""

import ml_collections

from vsegjax.data import synthetic


def _stage(num_steps, optimizer, **train):
    stage = ml_collections.ConfigDict()
    stage.train = ml_collections.ConfigDict(dict(
        num_steps=num_steps, log_every=50, checkpoint_every=250, eval_every=0,
        keep_checkpoints=2, init_from="", async_checkpoints=True, report_every_secs=30.0))
    stage.train.update(train)
    stage.optimizer = ml_collections.ConfigDict(optimizer)
    return stage


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "grfp"
    c.seed = 0
    c.mesh = ml_collections.ConfigDict(dict(num_devices=0))  # 0 = all devices

    c.data = ml_collections.ConfigDict(dict(
        name="synthetic_video", config="default", data_dir="~/tensorflow_datasets",
        build_if_missing=True, num_workers=0, class_names=list(synthetic.CLASSES)))

    c.input = ml_collections.ConfigDict()
    c.input.batch_size = 8
    c.input.window = (4, 2)  # frames before / after the labelled frame (T = 7)
    c.input.label_frame = "random"  # stage 1: any labelled frame of a snippet
    c.input.worker_count = 0
    c.input.augment = ml_collections.ConfigDict(dict(
        resize=(64, 128), scale_range=(0.8, 1.25), crop_size=(64, 128), hflip=True,
        color=(0.1, 0.1, 0.1), occlusion_out_of_view=True))

    c.model = ml_collections.ConfigDict(dict(
        backbone="small", head="simple", num_classes=len(synthetic.CLASSES), output_stride=8,
        width=32, dtype="float32"))

    c.flow = ml_collections.ConfigDict(dict(source="farneback", num_workers=0))

    c.grfp = ml_collections.ConfigDict(dict(
        mode="fwbw", kernel_size=7, identity_init=True, center_inputs=True, remat=False,
        train_static=False, loss_weights=dict(L_fwbw=1.0, L_fwd=1.0, L_bwd=1.0)))

    c.static_stage = _stage(1200, dict(name="adam", learning_rate=3e-3, schedule="cosine",
                                       warmup_steps=50, weight_decay=1e-5), eval_every=600)
    # The paper's STGRU optimiser: Adam with beta1 = 0.95, beta2 = 0.99.
    c.grfp_stage = _stage(400, dict(name="adam", learning_rate=1e-3, b1=0.95, b2=0.99,
                                    schedule="cosine", warmup_steps=20), eval_every=200)

    c.eval = ml_collections.ConfigDict(dict(split="validation", num_snippets=0, batch_size=8,
                                            num_panels=40))
    return c
