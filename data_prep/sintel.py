"""Builds the sintel TFDS dataset (ArrayRecord) from MPI-Sintel's training set.

    python data_prep/sintel.py --manual_dir=~/data/MPI-Sintel-complete \\
        --data_dir=~/tensorflow_datasets --pass_name=final --num_frames=4

The manual dir is the MPI-Sintel-complete folder (or its training/ folder) with
clean/ final/ flow/ occlusions/ invalid/; see vsegjax.data.flow_datasets for the details.
The config name is printed (clean, final, clean_t4, final_t4, or e.g. clean_t3s1).
"""

import time

from absl import app, flags

from vsegjax.data import default_data_dir, flow_datasets

_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "MPI-Sintel folder.", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", default_data_dir(),
                                "TFDS data directory ($TFDS_DATA_DIR if set).")
_PASS = flags.DEFINE_enum("pass_name", "clean", list(flow_datasets.SINTEL_PASSES),
                          "Rendering pass.")
_FRAMES = flags.DEFINE_integer("num_frames", 2, "Consecutive frames per snippet (>= 2).")
_STRIDE = flags.DEFINE_integer("stride", None,
                               "Frames between snippet starts (default num_frames - 1).")
_SKIP_BAD = flags.DEFINE_bool("skip_bad", False,
                              "Skip unreadable or mismatched snippets (reported at the end).")
_WORKERS = flags.DEFINE_integer("num_workers", None, "Reading threads (default: up to 8).")


def main(argv):
    del argv
    config = flow_datasets.sintel_config(_PASS.value, _FRAMES.value, _STRIDE.value)
    start = time.perf_counter()
    builder = flow_datasets.build("sintel", _DATA_DIR.value, _MANUAL_DIR.value, config,
                                  skip_bad=_SKIP_BAD.value, num_workers=_WORKERS.value)
    if any(builder.skipped.values()):
        print(builder.report())
    counts = {name: split.num_examples for name, split in builder.info.splits.items()}
    print(f"sintel/{config.name} ready in {builder.data_dir} {counts} "
          f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    app.run(main)
