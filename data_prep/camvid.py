"""Builds the camvid TFDS dataset (ArrayRecord) from the SegNet CamVid folders.

    python data_prep/camvid.py --manual_dir=~/data/CamVid --data_dir=~/tensorflow_datasets

The manual dir holds train/ trainannot/ val/ valannot/ test/ testannot/ (and optionally
train.txt, val.txt, test.txt); every split whose folders are present is built. Snippets
around each labelled frame, given the 30 fps frames of the source drives:

    python data_prep/camvid.py --manual_dir=... --data_dir=... \\
        --sequence_dir=~/data/CamVid/frames --frames_before=4 --frames_after=0

With ``--sequence``, the GRFP snippets of the labelled val sequence instead
(``vsegjax/data/camvid_sequence.py``: T = frames_before + 1 frames ending at a labelled
one, the first ``--split_at`` frames for training, the rest held out):

    python data_prep/camvid.py --manual_dir=... --data_dir=... --sequence
"""

import time

from absl import app, flags

from vsegjax.data import camvid, camvid_sequence, default_data_dir

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
_SEQUENCE = flags.DEFINE_bool("sequence", False, "Build camvid_sequence (the labelled val "
                              "sequence cut in time into train / heldout snippets).")
_SPLIT_AT = flags.DEFINE_integer("split_at", 50, "--sequence: frames of the sequence for train.")
_WORKERS = flags.DEFINE_integer("num_workers", None, "Reading threads (default: up to 8).")


def main(argv):
    del argv
    if _SEQUENCE.value:
        if _AFTER.value or _SEQUENCE_DIR.value or _LABEL_ALL.value:
            raise app.UsageError("--sequence takes --frames_before, --split_at and --resize "
                                 "only (its frames are the labelled sequence itself)")
        start = time.perf_counter()
        config = camvid_sequence.make_config(
            frames_before=_BEFORE.value or 4, split_at=_SPLIT_AT.value,
            resize=[int(v) for v in _RESIZE.value] if _RESIZE.value else None)
        builder = camvid_sequence.build(_DATA_DIR.value, _MANUAL_DIR.value, config,
                                        skip_bad=_SKIP_BAD.value, num_workers=_WORKERS.value)
        counts = {n: s.num_examples for n, s in builder.info.splits.items()}
        print(f"camvid_sequence/{config.name} ready in {builder.data_dir} {counts} "
              f"({time.perf_counter() - start:.1f} s)")
        return
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
