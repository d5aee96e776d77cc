"""SDC-Net video reconstruction / prediction on the synthetic dataset, sized for a 2-core CPU.

    python -m vsegjax.main --config=configs/sdc_synthetic.py --workdir=runs/sdc_synthetic
    python -m vsegjax.main --config=configs/sdc_synthetic.py:prediction --workdir=runs/sdc_pred

Self-supervised on the synthetic snippets (labels unused): the model synthesises frame
t+1 from frames t-1, t (and, in "reconstruction", frame t+1 itself, as VPLR's propagation
model does). ``sdc_metrics.json`` compares its PSNR / L1 on the validation split with the
copy-last-frame baseline. Variants (``:name``): "reconstruction" (default), "prediction".
"""

import ml_collections

from vsegjax.data import synthetic
from vsegjax.losses.sdc import DEFAULT_WEIGHTS
from vsegjax.models.sdc import sdc_config

VARIANTS = ("reconstruction", "prediction")


def get_config(variant: str = "reconstruction") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"configs/sdc_synthetic.py: unknown variant {variant!r}; choose from "
                         f"{list(VARIANTS)}")
    c = ml_collections.ConfigDict()
    c.task = "sdc"
    c.variant = variant
    c.seed = 0
    c.mesh = ml_collections.ConfigDict(dict(num_devices=0))
    c.data = ml_collections.ConfigDict(dict(
        name="synthetic_video", config="default", data_dir="~/tensorflow_datasets",
        build_if_missing=True, num_workers=0, class_names=list(synthetic.CLASSES)))

    c.input = ml_collections.ConfigDict(dict(batch_size=4, worker_count=0, class_uniform=False,
                                             train_split="train", label_frame="annotated"))
    # The same geometric/colour augmentation on every frame keeps the motion intact.
    c.input.augment = ml_collections.ConfigDict(dict(
        resize=(64, 128), scale_range=(0.8, 1.25), crop_size=(64, 128), hflip=True,
        color=(0.1, 0.1, 0.1), occlusion_out_of_view=False))
    # The pipeline checks the (unused) labels against the class count.
    c.model = ml_collections.ConfigDict(dict(num_classes=len(synthetic.CLASSES)))

    c.sdc = sdc_config(mode=variant)
    # Synthetic motion at 64x128 is at most ~4 px/frame; 8 px bounds it with room.
    c.sdc.max_motion = 8.0
    c.sdc.loss_weights = dict(DEFAULT_WEIGHTS)
    c.sdc.windows_per_snippet = 2

    c.train = ml_collections.ConfigDict(dict(
        num_steps=400, log_every=50, checkpoint_every=200, eval_every=200,
        keep_checkpoints=2, init_from="", async_checkpoints=True, report_every_secs=30.0))
    c.optimizer = ml_collections.ConfigDict(dict(name="adam", learning_rate=1e-3,
                                                 schedule="cosine", warmup_steps=20,
                                                 weight_decay=0.0))
    c.eval = ml_collections.ConfigDict(dict(split="validation", num_snippets=0, batch_size=8,
                                            num_panels=4))
    return c
