"""Builds the kitti_2015 TFDS dataset (ArrayRecord): flow pairs or the semantic images.

    python data_prep/kitti.py --manual_dir=~/data/kitti --data_dir=~/tensorflow_datasets
    python data_prep/kitti.py --manual_dir=~/data/kitti --data_dir=... --config=semantics

The manual dir holds training/ (image_2, flow_occ, flow_noc, semantic) or the unzipped
data_scene_flow/ and data_semantics/ folders. The TFDS name is kitti_2015 because TFDS
already has a "kitti" (object detection) dataset.
"""

import time

from absl import app, flags

from vsegjax.data import default_data_dir, flow_datasets

_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "KITTI folder.", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", default_data_dir(),
                                "TFDS data directory ($TFDS_DATA_DIR if set).")
_CONFIG = flags.DEFINE_enum("config", "flow", ["flow", "semantics"],
                            "flow: image_2 _10 -> _11 pairs with flow; semantics: the 200 "
                            "labelled images.")
_SKIP_BAD = flags.DEFINE_bool("skip_bad", False,
                              "Skip unreadable or incomplete scenes (reported at the end).")
_WORKERS = flags.DEFINE_integer("num_workers", None, "Reading threads (default: up to 8).")


def main(argv):
    del argv
    start = time.perf_counter()
    builder = flow_datasets.build("kitti_2015", _DATA_DIR.value, _MANUAL_DIR.value,
                                  _CONFIG.value, skip_bad=_SKIP_BAD.value,
                                  num_workers=_WORKERS.value)
    if any(builder.skipped.values()):
        print(builder.report())
    counts = {name: split.num_examples for name, split in builder.info.splits.items()}
    print(f"kitti_2015/{_CONFIG.value} ready in {builder.data_dir} {counts} "
          f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    app.run(main)
