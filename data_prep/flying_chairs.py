"""Builds the flying_chairs TFDS dataset (ArrayRecord) from FlyingChairs.

    python data_prep/flying_chairs.py --manual_dir=~/data/FlyingChairs_release \\
        --data_dir=~/tensorflow_datasets

The manual dir holds data/NNNNN_img1.ppm, NNNNN_img2.ppm, NNNNN_flow.flo (or is that data/
folder); with FlyingChairs_train_val.txt beside it the pairs are split into train and
validation, otherwise all go to train.
"""

import time

from absl import app, flags

from vsegjax.data import default_data_dir, flow_datasets

_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "FlyingChairs folder.", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", default_data_dir(),
                                "TFDS data directory ($TFDS_DATA_DIR if set).")
_SKIP_BAD = flags.DEFINE_bool("skip_bad", False,
                              "Skip unreadable or incomplete pairs (reported at the end).")
_WORKERS = flags.DEFINE_integer("num_workers", None, "Reading threads (default: up to 8).")


def main(argv):
    del argv
    start = time.perf_counter()
    builder = flow_datasets.build("flying_chairs", _DATA_DIR.value, _MANUAL_DIR.value,
                                  skip_bad=_SKIP_BAD.value, num_workers=_WORKERS.value)
    if any(builder.skipped.values()):
        print(builder.report())
    counts = {name: split.num_examples for name, split in builder.info.splits.items()}
    print(f"flying_chairs ready in {builder.data_dir} {counts} "
          f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    app.run(main)
