"""The video reconstruction model VPLR propagates with, on Cityscapes sequences.

    python -m vsegjax.main --config=configs/sdc_cityscapes.py --workdir=runs/sdc_cityscapes

Self-supervised on the 30-frame ``cityscapes_sequences`` snippets (labels unused): the
model reconstructs frame t+1 from frames t-1, t and t+1 itself (VPLR's "video
reconstruction"), one stage (``sdc``); ``configs/vplr_cityscapes.py`` reads its motion
through ``--config.vplr.sdc_workdir``. The seed gives no training recipe for this model,
so these are ours, sized for a pod: 512x512 crops (Cityscapes motion at 1024x2048 runs to
tens of pixels per frame, hence ``max_motion`` 48 and a wider, deeper net than the
synthetic one), a global batch of 16 windows (one per chip of a v5e-16 / v4-32), Adam
1e-4 for 60k steps. Needs ``cityscapes_sequences`` (data_prep/cityscapes.py).
"""

import ml_collections

from configs import common, sdc_synthetic


def get_config(variant: str = "reconstruction") -> ml_collections.ConfigDict:
    c = sdc_synthetic.get_config(variant)
    c.data = common.cityscapes_data()
    c.model = ml_collections.ConfigDict(dict(num_classes=len(common.CITYSCAPES_CLASSES)))
    c.input.batch_size = 16
    c.input.worker_count = 8
    c.input.augment = common.augment(resize=None, scale_range=(0.5, 1.0), crop_size=(512, 512),
                                     color=None, occlusion_out_of_view=False)
    c.sdc.update(dict(max_motion=48.0, width=64, depth=4, windows_per_snippet=1))
    c.train.update(dict(num_steps=60_000, log_every=100, checkpoint_every=2000,
                        eval_every=10_000))
    c.optimizer.update(dict(learning_rate=1e-4, warmup_steps=500))
    c.eval = common.eval_block(batch_size=16, num_panels=6)
    return c
