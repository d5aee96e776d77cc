"""VPLR on the synthetic dataset: the paper's ablation as variants (CPU, minutes each).

    python -m vsegjax.main --config=configs/vplr_synthetic.py:a --workdir=runs/vplr_a
    python -m vsegjax.main --config=configs/vplr_synthetic.py:d --config.seed=1 ...

Labels are kept on one frame in five (each snippet's annotated frame). Every variant trains
the same segmenter for the same steps on 8 examples per step (one stage, ``vplr``):

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
they add what the paper reports (docs/vplr.md gives each variant's mIoU over seeds).

Propagation: DIS flow (``vplr.motion``; "sdc" with ``vplr.sdc_workdir`` uses a trained
video reconstruction model's motion), k <= 3 frames from the labelled frame, at the
dataset's 128x256 (``vplr.propagate_at``), the pairs then resized to 64x128.
"""

import ml_collections

from configs import common
from vsegjax.methods.vplr import config as vplr_config

VARIANTS = ("a", "b", "c", "d", "e")


def get_config(variant: str = "d") -> ml_collections.ConfigDict:
    variant, nogeom = (variant[:-len("_nogeom")], True) if variant.endswith("_nogeom") \
        else (variant, False)
    if variant not in VARIANTS:
        raise ValueError(f"configs/vplr_synthetic.py: unknown variant {variant!r}; choose "
                         f"from {list(VARIANTS)}, each optionally with '_nogeom'")
    c = common.base(num_steps=1200)
    c.variant = variant
    c.input.batch_size = 8 if variant == "a" else 4
    if nogeom:
        c.input.augment.update(dict(scale_range=(1.0, 1.0), hflip=False))
    # Move labels at the stored 128x256, then resize: sharper pairs (methods/vplr/task.py).
    c.vplr = vplr_config.vplr_block(mode={"a": "none", "b": "label"}.get(variant, "joint"),
                                    k=3, motion="dis", propagate_at="native")
    c.loss = ml_collections.ConfigDict(dict(
        relaxation_window=3 if variant in ("d", "e") else 0,
        relaxation_on="propagated" if variant == "e" else "all"))
    c.train.update(dict(checkpoint_every=300, keep_checkpoints=1))
    return common.set_stages(c, ("vplr", common.stage("vplr")))
