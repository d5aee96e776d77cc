"""Builds snippets of a user's video (TFDS ``user_video``, ArrayRecord).

    python data_prep/user_video.py --frames=/data/clip.mp4 --labels=/data/clip_labels \\
        --num_classes=11 --frames_before=2 --frames_after=2 --resize=360,480
    python data_prep/user_video.py --frames=/data/frames_folder --max_frames=300

``--frames`` is a folder of PNG/JPEG frames (natural order of the file names) or a video
file; ``--labels`` a folder of label PNGs (class ids, 255 = ignore) whose stems match the
frame stems (for a video: ``%06d`` frame numbers, 0-based, of the original video).
"""

import sys

from absl import app, flags

from vsegjax.data import default_data_dir, video_datasets

_FRAMES = flags.DEFINE_string("frames", None, "Folder of frames, or a video file.",
                              required=True)
_LABELS = flags.DEFINE_string("labels", None, "Folder of label PNGs (optional).")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", None, "Number of classes (with --labels).")
_DATA_DIR = flags.DEFINE_string("data_dir", default_data_dir(),
                                "TFDS data directory ($TFDS_DATA_DIR if set).")
_BEFORE = flags.DEFINE_integer("frames_before", 2, "Frames before each labelled frame.")
_AFTER = flags.DEFINE_integer("frames_after", 2, "Frames after each labelled frame.")
_STRIDE = flags.DEFINE_integer("stride", None, "Window step without labels (default: "
                               "snippet length).")
_MAX_FRAMES = flags.DEFINE_integer("max_frames", None, "Keep at most this many frames.")
_EVERY_NTH = flags.DEFINE_integer("every_nth", 1, "Keep every n-th frame.")
_RESIZE = flags.DEFINE_list("resize", None, "HEIGHT,WIDTH to resize to.")
_SKIP_BAD = flags.DEFINE_bool("skip_bad", False, "Skip snippets with bad files and report.")
_NAME = flags.DEFINE_string("name", None, "Config name (default: input name + options).")


def main(argv):
    del argv
    try:
        config = video_datasets.user_video_config(
            _FRAMES.value, _LABELS.value, num_classes=_NUM_CLASSES.value,
            frames_before=_BEFORE.value, frames_after=_AFTER.value, stride=_STRIDE.value,
            max_frames=_MAX_FRAMES.value, every_nth=_EVERY_NTH.value,
            resize=[int(v) for v in _RESIZE.value] if _RESIZE.value else None,
            name=_NAME.value)
        print(f"user_video/{config.name}: {config.description}", flush=True)
        # The frames and labels are checked before TFDS creates anything in the data dir.
        video_datasets.plan_user_video(
            config, skip=(lambda what, err: None) if _SKIP_BAD.value else None)
        builder = video_datasets.build("user_video", _DATA_DIR.value, config,
                                       skip_bad=_SKIP_BAD.value,
                                       progress=lambda msg: print(msg, flush=True))
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"  full: {builder.info.splits['full'].num_examples} snippets")
    for entry in builder.info.metadata.get("skipped", {}).get("full", []):
        print(f"  skipped {entry['what']}: {entry['why']}")
    print(f"ready in {builder.data_dir}; read with tfds.data_source("
          f"'user_video/{config.name}', split='full', data_dir='{_DATA_DIR.value}')")


if __name__ == "__main__":
    app.run(main)
