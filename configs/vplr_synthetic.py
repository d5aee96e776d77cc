"""VPLR on the synthetic dataset: the paper's ablation as variants (CPU, minutes each).

    python -m vsegjax.main --config=configs/vplr_synthetic.py:a --workdir=runs/vplr_a
    python -m vsegjax.main --config=configs/vplr_synthetic.py:d --config.seed=1 ...

Labels are kept on one frame in five (each snippet's annotated frame). Every variant trains
the same segmenter for the same steps on 8 examples per step:

  a  labelled frames only (8 per step)
  b  + label propagation: 4 labelled + 4 (true frame, label moved +-k) per step
  c  + joint propagation: 4 labelled + 4 (moved image, moved label) per step
  d  c + boundary label relaxation (3x3 window)
  e  c + relaxation on the propagated pairs only (at 64x128 a 3x3 window covers thin
     objects such as poles whole, so relaxing the true labels too costs them)

A ``_nogeom`` suffix (``:d_nogeom``) turns the geometric augmentation off (no random scale
or flip; colour jitter stays). The synthetic camera moves about 1.4 px per frame at
128x256, so frames +-3 from a label are nearly the view random scaling and flipping
already give: with that augmentation the propagated pairs add nothing here, without it
they add what the paper reports (README, VPLR table).

Propagation: DIS flow (``vplr.motion``; "sdc" with ``vplr.sdc_workdir`` uses a trained
video reconstruction model's motion), k <= 3 frames from the labelled frame, at the
dataset's 128x256 (``vplr.propagate_at``), the pairs then resized to 64x128.
"""

import ml_collections

from vsegjax.data import synthetic

VARIANTS = ("a", "b", "c", "d", "e")


def get_config(variant: str = "d") -> ml_collections.ConfigDict:
    variant, nogeom = (variant[:-len("_nogeom")], True) if variant.endswith("_nogeom") \
        else (variant, False)
    if variant not in VARIANTS:
        raise ValueError(f"configs/vplr_synthetic.py: unknown variant {variant!r}; choose "
                         f"from {list(VARIANTS)}, each optionally with '_nogeom'")
    c = ml_collections.ConfigDict()
    c.task = "vplr"
    c.variant = variant
    c.seed = 0
    c.mesh = ml_collections.ConfigDict(dict(num_devices=0))
    c.data = ml_collections.ConfigDict(dict(
        name="synthetic_video", config="default", data_dir="~/tensorflow_datasets",
        build_if_missing=True, num_workers=0, class_names=list(synthetic.CLASSES)))
    c.input = ml_collections.ConfigDict(dict(
        batch_size=8 if variant == "a" else 4, label_frame="annotated", worker_count=0,
        class_uniform=False, train_split="train"))
    c.input.augment = ml_collections.ConfigDict(dict(
        resize=(64, 128), scale_range=(0.8, 1.25), crop_size=(64, 128), hflip=True,
        color=(0.1, 0.1, 0.1)))
    if nogeom:
        c.input.augment.update(dict(scale_range=(1.0, 1.0), hflip=False))
    c.model = ml_collections.ConfigDict(dict(
        backbone="small", head="simple", num_classes=len(synthetic.CLASSES), output_stride=8,
        width=32, dtype="float32"))
    c.vplr = ml_collections.ConfigDict(dict(
        mode={"a": "none", "b": "label"}.get(variant, "joint"), k=3, motion="dis",
        sdc_workdir="", propagated_batch_size=4,
        # Move labels at the stored 128x256, then resize: sharper pairs (train/vplr.py).
        propagate_at="native"))
    c.loss = ml_collections.ConfigDict(dict(
        relaxation_window=3 if variant in ("d", "e") else 0,
        relaxation_on="propagated" if variant == "e" else "all"))
    c.train = ml_collections.ConfigDict(dict(
        num_steps=1200, log_every=50, checkpoint_every=300, eval_every=0, keep_checkpoints=1,
        init_from="", async_checkpoints=True, report_every_secs=30.0))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=3e-3, schedule="cosine", warmup_steps=50, weight_decay=1e-5))
    c.eval = ml_collections.ConfigDict(dict(split="validation", num_snippets=0, batch_size=8))
    return c
