"""Builds the cityscapes_sequences TFDS dataset (ArrayRecord) from the official downloads.

    python data_prep/cityscapes.py --manual_dir=~/data/cityscapes --data_dir=~/tensorflow_datasets

The manual dir holds leftImg8bit_sequence/ and gtFine/ (and gtCoarse/, leftImg8bit/demoVideo/
for the other configs); every split whose folders are present is built. Predefined configs:
default (19+1+10 frames, 2048x1024), t5_512x1024, coarse, demo_video:

    python data_prep/cityscapes.py --manual_dir=... --data_dir=... --config=t5_512x1024
    python data_prep/cityscapes.py --manual_dir=... --data_dir=... --config=demo_video

Any other window or size: --mode=fine|coarse|demo_video with --frames_before,
--frames_after, --demo_frames, --demo_stride, --resize=height,width.
"""

import time

from absl import app, flags

from vsegjax.data import cityscapes, default_data_dir

_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Cityscapes folder (leftImg8bit_sequence/, "
                                  "gtFine/, ...).", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", default_data_dir(),
                                "TFDS data directory ($TFDS_DATA_DIR if set).")
_CONFIG = flags.DEFINE_enum("config", None, [c.name for c in cityscapes.BUILDER_CONFIGS],
                            "A predefined config (overrides the options below).")
_MODE = flags.DEFINE_enum("mode", "fine", list(cityscapes.MODES), "Labels to build around.")
_BEFORE = flags.DEFINE_integer("frames_before", cityscapes.LABELLED_FRAME,
                               "Sequence frames before each labelled one.")
_AFTER = flags.DEFINE_integer("frames_after", cityscapes.SNIPPET_LENGTH - 1
                              - cityscapes.LABELLED_FRAME, "Sequence frames after it.")
_DEMO_FRAMES = flags.DEFINE_integer("demo_frames", cityscapes.SNIPPET_LENGTH,
                                    "demo_video: frames per window.")
_DEMO_STRIDE = flags.DEFINE_integer("demo_stride", 0, "demo_video: window step (0 = length).")
_RESIZE = flags.DEFINE_list("resize", None, "height,width to resize frames and labels to.")
_SKIP_BAD = flags.DEFINE_bool("skip_bad", False,
                              "Skip unreadable or mismatched snippets (reported at the end).")
_WORKERS = flags.DEFINE_integer("num_workers", None, "Reading threads (default: up to 8).")


def main(argv):
    del argv
    if _CONFIG.value:
        config = _CONFIG.value
    else:
        config = cityscapes.custom_config(
            mode=_MODE.value, frames_before=_BEFORE.value, frames_after=_AFTER.value,
            resize=[int(v) for v in _RESIZE.value] if _RESIZE.value else None,
            demo_frames=_DEMO_FRAMES.value, demo_stride=_DEMO_STRIDE.value)
    name = config if isinstance(config, str) else config.name
    print(f"cityscapes_sequences/{name}: reading {_MANUAL_DIR.value}", flush=True)
    start = time.perf_counter()
    builder = cityscapes.build(_DATA_DIR.value, _MANUAL_DIR.value, config,
                               skip_bad=_SKIP_BAD.value, num_workers=_WORKERS.value)
    if builder.skipped and any(builder.skipped.values()):
        print(builder.report())
    counts = {split: info.num_examples for split, info in builder.info.splits.items()}
    print(f"cityscapes_sequences/{builder.builder_config.name} ready in {builder.data_dir} "
          f"{counts} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    app.run(main)
