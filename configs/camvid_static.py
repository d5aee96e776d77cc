"""A static segmenter trained on CamVid (11 classes) at half resolution, 180x240, on a CPU.

    python -m vsegjax.main --config=configs/camvid_static.py --workdir=runs/camvid_static \\
        --config.data.manual_dir=/path/to/CamVid

``data.manual_dir`` is the SegNet-style CamVid folder (train/ trainannot/ val/ valannot/
[test/ testannot/] and the *.txt lists); it is prepared into ``data.data_dir`` on first
use. The evaluation split is ``eval.split`` (validation, or test when the folder has it).
"""

import os

import ml_collections

CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
                  "Car", "Pedestrian", "Bicyclist")


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "static"
    c.seed = 0
    c.mesh = ml_collections.ConfigDict(dict(num_devices=0))
    # The development checkout keeps a copy of CamVid beside the repository.
    shared = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                          "data", "camvid")
    c.data = ml_collections.ConfigDict(dict(
        name="camvid", config="default", data_dir="~/tensorflow_datasets",
        manual_dir=os.path.normpath(shared) if os.path.isdir(shared) else "",
        build_if_missing=True, class_names=list(CAMVID_CLASSES)))
    c.input = ml_collections.ConfigDict(dict(
        batch_size=8, label_frame="annotated", worker_count=0, class_uniform=True,
        train_split="train"))
    c.input.augment = ml_collections.ConfigDict(dict(
        resize=(180, 240), scale_range=(0.75, 1.5), crop_size=(176, 240), hflip=True,
        color=(0.2, 0.2, 0.2), occlusion_out_of_view=False))
    c.model = ml_collections.ConfigDict(dict(
        backbone="small", head="simple", num_classes=len(CAMVID_CLASSES), output_stride=8,
        width=32, dtype="float32"))
    c.train = ml_collections.ConfigDict(dict(
        num_steps=5000, log_every=100, checkpoint_every=1000, eval_every=2500,
        keep_checkpoints=2, init_from="", async_checkpoints=True, report_every_secs=60.0))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=3e-3, schedule="cosine", warmup_steps=100,
        weight_decay=1e-5))
    c.eval = ml_collections.ConfigDict(dict(split="validation", num_snippets=0, batch_size=8,
                                            num_panels=6))
    return c
