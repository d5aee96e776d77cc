"""A static segmenter trained on CamVid (11 classes) at half resolution, 180x240, on a CPU.

    python -m vsegjax.main --config=configs/camvid_static.py --workdir=runs/camvid_static \\
        --config.data.manual_dir=/path/to/CamVid

``data.manual_dir`` is the SegNet-style CamVid folder (train/ trainannot/ val/ valannot/
[test/ testannot/] and the *.txt lists); it is prepared into ``data.data_dir`` on first
use. The evaluation split is ``eval.split`` (validation, or test when the folder has it).
SmallSegNet from scratch, class-uniform sampling, 5000 steps of batch 8: it should reach
a CamVid val mIoU of about 0.54 (docs/camvid.md), in about 10 minutes on 2 CPU cores.
"""

import os

import ml_collections

from configs import common

CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
                  "Car", "Pedestrian", "Bicyclist")


def get_config() -> ml_collections.ConfigDict:
    c = common.base(num_steps=5000)
    # The development checkout keeps a copy of CamVid beside the repository.
    shared = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                          "data", "camvid")
    c.data = ml_collections.ConfigDict(dict(
        name="camvid", config="default", data_dir="~/tensorflow_datasets",
        manual_dir=os.path.normpath(shared) if os.path.isdir(shared) else "",
        build_if_missing=True, class_names=list(CAMVID_CLASSES)))
    c.input.class_uniform = True
    c.input.augment = common.augment(resize=(180, 240), scale_range=(0.75, 1.5),
                                     crop_size=(176, 240), color=(0.2, 0.2, 0.2),
                                     occlusion_out_of_view=False)
    c.model.num_classes = len(CAMVID_CLASSES)
    c.train.update(dict(log_every=100, checkpoint_every=1000, eval_every=2500,
                        report_every_secs=60.0))
    c.optimizer.warmup_steps = 100
    c.eval.num_panels = 6
    return common.set_stages(c, ("static", common.stage("static")))
