"""SDC-Net video reconstruction / prediction on the synthetic dataset, sized for a 2-core CPU.

    python -m vsegjax.main --config=configs/sdc_synthetic.py --workdir=runs/sdc_synthetic
    python -m vsegjax.main --config=configs/sdc_synthetic.py:prediction --workdir=runs/sdc_pred

Self-supervised on the synthetic snippets (labels unused), one stage (``sdc``): the
model synthesises frame t+1 from frames t-1, t (and, in "reconstruction", frame t+1
itself, as VPLR's propagation model does). ``eval_metrics.json`` compares its PSNR / L1
on the validation split with the copy-last-frame baseline (docs/vplr.md). The run's
``sdc/`` folder serves its motion to VPLR (``--config.vplr.motion=sdc
--config.vplr.sdc_workdir=<this run>``). Variants (``:name``): "reconstruction"
(default), "prediction".
"""

import ml_collections

from configs import common
from vsegjax.data import synthetic
from vsegjax.methods.vplr import config as vplr_config

VARIANTS = ("reconstruction", "prediction")


def get_config(variant: str = "reconstruction") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"configs/sdc_synthetic.py: unknown variant {variant!r}; choose from "
                         f"{list(VARIANTS)}")
    c = common.base(num_steps=400, learning_rate=1e-3)
    c.variant = variant
    c.input.batch_size = 4
    # The same geometric/colour augmentation on every frame keeps the motion intact.
    c.input.augment.occlusion_out_of_view = False
    # The pipeline checks the (unused) labels against the class count.
    c.model = ml_collections.ConfigDict(dict(num_classes=len(synthetic.CLASSES)))

    # Synthetic motion at 64x128 is at most ~4 px/frame; 8 px bounds it with room.
    c.sdc = vplr_config.sdc_block(mode=variant, max_motion=8.0, windows_per_snippet=2)

    c.train.update(dict(checkpoint_every=200, eval_every=200))
    c.optimizer.update(dict(warmup_steps=20, weight_decay=0.0))
    return common.set_stages(c, ("sdc", common.stage("sdc")))
