"""Builds DAVIS 2016/2017 snippets (TFDS ``vsegjax_davis``, ArrayRecord) from a DAVIS folder.

    python data_prep/davis.py --manual_dir=~/data/DAVIS --config=2016
    python data_prep/davis.py --manual_dir=~/data/DAVIS-2017 --year=2017 --instances \\
        --num_frames=8 --stride=4 --resize=240,427 --data_dir=~/tensorflow_datasets

The manual dir holds ``JPEGImages/480p/<seq>/*.jpg`` and ``Annotations/480p/<seq>/*.png``;
``ImageSets/<year>/*.txt`` (if present) define the splits, else one split ``full``.
``--config`` picks a preset (whole sequences at 480p); without it the options below make
a custom config whose name encodes them.
"""

import sys

from absl import app, flags

from vsegjax.data import default_data_dir, video_datasets

_MANUAL_DIR = flags.DEFINE_string("manual_dir", None,
                                  "DAVIS folder (with JPEGImages/ and Annotations/).",
                                  required=True)
_CONFIG = flags.DEFINE_enum("config", None, [c.name for c in video_datasets.DAVIS_PRESETS],
                            "A preset config (else the options below).")
_DATA_DIR = flags.DEFINE_string("data_dir", default_data_dir(),
                                "TFDS data directory ($TFDS_DATA_DIR if set).")
_YEAR = flags.DEFINE_enum("year", "2016", ["2016", "2017"],
                          "2016: 0/255 masks; 2017: palette masks with instance ids.")
_RESOLUTION = flags.DEFINE_string("resolution", "480p", "Sub-folder: 480p or Full-Resolution.")
_INSTANCES = flags.DEFINE_bool("instances", False,
                               "2017: keep instance ids (else every object is class 1).")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", None, "Window length (default: whole "
                                   "sequences).")
_STRIDE = flags.DEFINE_integer("stride", None, "Window step (default: num_frames).")
_RESIZE = flags.DEFINE_list("resize", None, "HEIGHT,WIDTH to resize to (e.g. 240,427).")
_IMAGE_SETS = flags.DEFINE_string("image_sets", None, "Split-file folder (default: "
                                  "ImageSets/<year>, then ImageSets/<resolution>).")
_SKIP_BAD = flags.DEFINE_bool("skip_bad", False, "Skip snippets with bad files and report.")
_NAME = flags.DEFINE_string("name", None, "Config name (default: options + digest).")
_OPTIONS = ("year", "resolution", "instances", "num_frames", "stride", "resize", "image_sets",
            "name")


def main(argv):
    del argv
    if _CONFIG.value is not None:
        given = [f"--{o}" for o in _OPTIONS if flags.FLAGS[o].present]
        if given:
            raise app.UsageError(f"--config={_CONFIG.value} is a preset; drop {given} or "
                                 f"drop --config")
    try:
        config = _CONFIG.value or video_datasets.davis_config(
            _YEAR.value, resolution=_RESOLUTION.value, instances=_INSTANCES.value,
            num_frames=_NUM_FRAMES.value, stride=_STRIDE.value,
            resize=[int(v) for v in _RESIZE.value] if _RESIZE.value else None,
            image_sets=_IMAGE_SETS.value, name=_NAME.value)
        builder = video_datasets.make_builder("davis", _DATA_DIR.value, config)
        name = builder.builder_config.name
        print(f"vsegjax_davis/{name}: {builder.builder_config.description}", flush=True)
        builder = video_datasets.build("davis", _DATA_DIR.value, config, _MANUAL_DIR.value,
                                       skip_bad=_SKIP_BAD.value,
                                       progress=lambda msg: print(msg, flush=True))
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    for split, info in builder.info.splits.items():
        print(f"  {split}: {info.num_examples} snippets")
    skipped = builder.info.metadata.get("skipped", {})
    for split, entries in skipped.items():
        for entry in entries:
            print(f"  skipped ({split}) {entry['what']}: {entry['why']}")
    print(f"num_classes: {builder.info.metadata.get('num_classes')}")
    print(f"ready in {builder.data_dir}; read with tfds.data_source("
          f"'vsegjax_davis/{name}', split=..., data_dir='{_DATA_DIR.value}')")


if __name__ == "__main__":
    app.run(main)
