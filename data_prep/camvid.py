"""Builds the camvid TFDS dataset (ArrayRecord) from the SegNet CamVid folders.

    python data_prep/camvid.py --manual_dir=~/data/CamVid --data_dir=~/tensorflow_datasets

The manual dir holds train/ trainannot/ val/ valannot/ test/ testannot/ (and optionally
train.txt, val.txt, test.txt); every split whose folders are present is built. Snippets
around each labelled frame, given the 30 fps frames of the source drives:

    python data_prep/camvid.py --manual_dir=... --data_dir=... \\
        --sequence_dir=~/data/CamVid/frames --frames_before=4 --frames_after=0
"""

import time

from absl import app, flags

from vsegjax.data import camvid, default_data_dir

_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "CamVid folder (train/, trainannot/, ...).",
                                  required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", default_data_dir(),
                                "TFDS data directory ($TFDS_DATA_DIR if set).")
_SKIP_BAD = flags.DEFINE_bool("skip_bad", False,
                              "Skip unreadable or mismatched examples (reported at the end).")
_SEQUENCE_DIR = flags.DEFINE_string("sequence_dir", None, "Folder of 30 fps frames.")
_BEFORE = flags.DEFINE_integer("frames_before", 0, "30 fps frames before each labelled one.")
_AFTER = flags.DEFINE_integer("frames_after", 0, "30 fps frames after each labelled one.")
_RESIZE = flags.DEFINE_list("resize", None, "height,width to resize frames and labels to.")
_LABEL_FORMAT = flags.DEFINE_enum("label_format", "ids", list(camvid.LABEL_FORMATS),
                                  "Label PNGs hold ids (0..11) or CamVid colours.")
_LABEL_ALL = flags.DEFINE_bool("label_all_frames", False,
                               "Also label snippet frames that are labelled in the same split.")
_WORKERS = flags.DEFINE_integer("num_workers", None, "Reading threads (default: up to 8).")


def main(argv):
    del argv
    config = camvid.custom_config(
        frames_before=_BEFORE.value, frames_after=_AFTER.value,
        sequence_dir=_SEQUENCE_DIR.value,
        resize=[int(v) for v in _RESIZE.value] if _RESIZE.value else None,
        label_format=_LABEL_FORMAT.value, label_all_frames=_LABEL_ALL.value)
    start = time.perf_counter()
    builder = camvid.build(_DATA_DIR.value, _MANUAL_DIR.value, config,
                           skip_bad=_SKIP_BAD.value, num_workers=_WORKERS.value)
    if builder.skipped and any(builder.skipped.values()):
        print(builder.report())
    counts = {name: split.num_examples for name, split in builder.info.splits.items()}
    print(f"camvid/{builder.builder_config.name} ready in {builder.data_dir} {counts} "
          f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    app.run(main)
