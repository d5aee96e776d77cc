"""A static segmenter alone on the synthetic dataset (a baseline for every video method).

    python -m vsegjax.main --config=configs/static_synthetic.py --workdir=runs/static_synthetic
"""

import ml_collections

from vsegjax.data import synthetic


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "static"
    c.seed = 0
    c.mesh = ml_collections.ConfigDict(dict(num_devices=0))
    c.data = ml_collections.ConfigDict(dict(
        name="synthetic_video", config="default", data_dir="~/tensorflow_datasets",
        build_if_missing=True, num_workers=0, class_names=list(synthetic.CLASSES)))
    c.input = ml_collections.ConfigDict(dict(
        batch_size=8, label_frame="random", worker_count=0, class_uniform=False,
        train_split="train"))
    c.input.augment = ml_collections.ConfigDict(dict(
        resize=(64, 128), scale_range=(0.8, 1.25), crop_size=(64, 128), hflip=True,
        color=(0.1, 0.1, 0.1), occlusion_out_of_view=True))
    c.model = ml_collections.ConfigDict(dict(
        backbone="small", head="simple", num_classes=len(synthetic.CLASSES), output_stride=8,
        width=32, dtype="float32"))
    c.train = ml_collections.ConfigDict(dict(
        num_steps=1200, log_every=50, checkpoint_every=250, eval_every=600, keep_checkpoints=2,
        init_from="", async_checkpoints=True, report_every_secs=30.0))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=3e-3, schedule="cosine", warmup_steps=50, weight_decay=1e-5))
    c.eval = ml_collections.ConfigDict(dict(split="validation", num_snippets=0, batch_size=8,
                                            num_panels=4))
    return c
