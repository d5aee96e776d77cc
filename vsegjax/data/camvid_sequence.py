"""TFDS builder ``camvid_sequence``: GRFP snippets from CamVid's densely labelled drive.

CamVid's val split (SegNet version) is 101 frames of drive 0016E5, every second frame of
its 30 fps video (``0016E5_07959`` .. ``0016E5_08159``), and every one is labelled. That
is the only labelled *sequence* in CamVid, so it is where a video model can be trained
and measured on consecutive real frames:

- the sequence (``source_split``'s entries, sorted by frame number) is cut in two at
  ``split_at``: frames ``[0, split_at)`` serve split ``train``, the rest split
  ``heldout``;
- each snippet is the ``frames_before`` + 1 frames ending at one labelled frame, every
  ``stride`` frame numbers apart (2 for CamVid val), all inside one part, so no snippet
  crosses the boundary and no held-back frame is ever seen in training.

With the defaults (T = 5, split at 50): ``train`` has 46 snippets ending at frames 4..49
of the sequence, ``heldout`` 47 ending at frames 54..100. Every frame of a snippet keeps
its label (``has_label`` all True); ``label_index`` is the last frame. A gap in the frame
numbers (a missing file) inside a window is a ``BadExample`` naming both frames.

    python data_prep/camvid.py --manual_dir=~/data/CamVid --data_dir=... --sequence
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from vsegjax.data import camvid, snippet_builder
from vsegjax.data.snippet_builder import BadExample

SPLITS = ("train", "heldout")


@dataclasses.dataclass(eq=False)
class SequenceConfig(tfds.core.BuilderConfig):
    """source_split: the CamVid split holding the labelled sequence (its folder is read).
    frames_before: frames before the labelled one in a snippet (T = frames_before + 1).
    stride: frame-number step between consecutive frames of the sequence.
    split_at: the first ``split_at`` frames of the sequence are ``train``'s, the rest
      ``heldout``'s.
    resize: (height, width) to resize to, or None to keep CamVid's 360x480."""

    source_split: str = "validation"
    frames_before: int = 4
    stride: int = 2
    split_at: int = 50
    resize: tuple[int, int] | None = None

    @property
    def num_frames(self) -> int:
        return self.frames_before + 1

    @property
    def out_size(self) -> tuple[int, int]:
        return tuple(self.resize) if self.resize is not None else camvid.FULL_SIZE


def config_name(frames_before: int, split_at: int, stride: int = 2,
                source_split: str = "validation",
                resize: tuple[int, int] | None = None) -> str:
    name = f"t{frames_before + 1}_split{split_at}"
    if stride != 2:
        name += f"_stride{stride}"
    if source_split != "validation":
        name += f"_{source_split}"
    if resize is not None:
        name += f"_{resize[0]}x{resize[1]}"
    return name


def make_config(frames_before: int = 4, split_at: int = 50, stride: int = 2,
                source_split: str = "validation",
                resize: tuple[int, int] | None = None) -> SequenceConfig:
    """A config whose name encodes every option that changes the records."""
    where = "camvid_sequence config"
    for field, value, low in (("frames_before", frames_before, 1), ("split_at", split_at, 1),
                              ("stride", stride, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{where}: {field} must be an integer >= {low}; got {value!r}")
    if source_split not in camvid.SPLIT_FOLDERS:
        raise ValueError(f"{where}: source_split must be one of {sorted(camvid.SPLIT_FOLDERS)}; "
                         f"got {source_split!r}")
    if resize is not None:
        resize = tuple(int(v) for v in resize)
        if len(resize) != 2 or min(resize) < 8:
            raise ValueError(f"{where}: resize must be (height, width) >= 8; got {resize!r}")
    name = config_name(frames_before, split_at, stride, source_split, resize)
    return SequenceConfig(name=name, description=(
        f"{frames_before + 1}-frame snippets of CamVid {source_split}'s labelled sequence, "
        f"frames [0, {split_at}) -> train, the rest -> heldout"),
        source_split=source_split, frames_before=frames_before, stride=stride,
        split_at=split_at, resize=resize)


DEFAULT = make_config()


def sequence_entries(entries: list[camvid.Entry]) -> list[camvid.Entry]:
    """The split's entries in frame order; ValueError naming a name without a frame
    number or a second drive (the parts must be one continuous video)."""
    keyed = []
    for entry in entries:
        try:
            prefix, number, _ = camvid.parse_frame_name(entry.name)
        except ValueError as e:
            raise ValueError(f"{entry.image}: {e}") from e
        keyed.append((prefix, number, entry))
    prefixes = sorted({p for p, _, _ in keyed})
    if len(prefixes) > 1:
        raise ValueError(f"camvid_sequence: the source split holds frames of several drives "
                         f"{prefixes}; it must be one labelled sequence")
    return [e for _, _, e in sorted(keyed, key=lambda k: k[1])]


def windows(num_frames: int, cfg: SequenceConfig) -> dict[str, list[list[int]]]:
    """Split -> the index windows (positions in the sequence, oldest first) of its
    snippets. A window never holds positions from both sides of ``split_at``."""
    t = cfg.num_frames
    parts = {"train": range(0, min(cfg.split_at, num_frames)),
             "heldout": range(min(cfg.split_at, num_frames), num_frames)}
    return {split: [list(range(end - t + 1, end + 1)) for end in part
                    if end - t + 1 >= part.start]
            for split, part in parts.items()}


def load_snippet(cfg: SequenceConfig, sequence: list[camvid.Entry],
                 window: list[int]) -> dict[str, np.ndarray]:
    """The snippet of ``window`` (positions into ``sequence``) in the ``features.py`` format."""
    numbers = [camvid.parse_frame_name(sequence[i].name)[1] for i in window]
    for a, b, i in zip(numbers, numbers[1:], window):
        if b - a != cfg.stride:
            raise BadExample(f"gap in the sequence: {sequence[i].image} and "
                             f"{sequence[i + 1].image} are {b - a} frame numbers apart, "
                             f"expected {cfg.stride}",
                             [sequence[i].image, sequence[i + 1].image])
    pairs = [camvid.load_labelled(sequence[i], "ids") for i in window]
    size = pairs[-1][0].shape[:2]
    for (frame, _), i in zip(pairs, window):
        if frame.shape[:2] != size:
            raise BadExample(f"size mismatch: {sequence[i].image} is {frame.shape[1]}x"
                             f"{frame.shape[0]} but {sequence[window[-1]].image} in the same "
                             f"snippet is {size[1]}x{size[0]}")
    out = cfg.out_size
    return {
        "frames": np.stack([snippet_builder.resize(f, out, nearest=False) for f, _ in pairs]),
        "labels": np.stack([snippet_builder.resize(l, out, nearest=True) for _, l in pairs]),
        "has_label": np.ones(len(window), bool),
        "label_index": np.int32(len(window) - 1),
        "snippet_id": np.int64(window[-1]),  # position of the labelled frame in the sequence
        "frame_index": np.int64(numbers[-1]),
    }


class CamVidSequence(snippet_builder.SnippetBuilder):
    """Snippets of CamVid's labelled 0016E5 sequence, split in time (see the module)."""

    name = "camvid_sequence"
    BUILDER_CONFIGS = [DEFAULT]
    DEFAULT_CONFIG_NAME = DEFAULT.name
    EXPECTED = camvid.EXPECTED_LAYOUT
    MANUAL_DOWNLOAD_INSTRUCTIONS = camvid.CamVid.MANUAL_DOWNLOAD_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        h, w = cfg.out_size
        return self.dataset_info_from_configs(
            description=(f"{cfg.description}; CamVid 11 classes {list(camvid.CLASS_NAMES)}, "
                         f"{w}x{h}."),
            features=snippet_builder.snippet_features(cfg.num_frames, (h, w)),
            supervised_keys=None,
            homepage="http://mi.eng.cam.ac.uk/research/projects/VideoRec/CamVid/",
            citation=camvid.CITATION,
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        root = self._manual_root(dl_manager)
        if cfg.source_split not in camvid.present_splits(root):
            raise FileNotFoundError(
                f"camvid_sequence: {root} has no {camvid.SPLIT_FOLDERS[cfg.source_split][0]}/ "
                f"folder (the labelled sequence); {camvid.EXPECTED_LAYOUT}")
        sequence = sequence_entries(camvid.list_split(root, cfg.source_split))
        by_split = windows(len(sequence), cfg)
        if not by_split["train"] or not by_split["heldout"]:
            raise ValueError(
                f"camvid_sequence/{cfg.name}: {len(sequence)} frames split at {cfg.split_at} "
                f"leave {len(by_split['train'])} train and {len(by_split['heldout'])} heldout "
                f"snippets of {cfg.num_frames} frames; choose a smaller frames_before or "
                f"another split_at")
        self.info.metadata["names"] = {s: [sequence[w[-1]].name for w in ws]
                                       for s, ws in by_split.items()}
        self.info.metadata["boundary"] = sequence[min(cfg.split_at, len(sequence) - 1)].name
        return {split: self._generate_examples(split, sequence, ws)
                for split, ws in by_split.items()}

    def _generate_examples(self, split, sequence, split_windows):
        cfg = self.builder_config
        for window, example in self._write(
                split, split_windows, lambda w: load_snippet(cfg, sequence, w),
                what=lambda w: sequence[w[-1]].name):
            yield window[-1], example


def make_builder(data_dir: str, config: str | SequenceConfig = DEFAULT.name,
                 **kwargs) -> CamVidSequence:
    return CamVidSequence(config=config, data_dir=os.path.expanduser(data_dir), **kwargs)


def build(data_dir: str, manual_dir: str | os.PathLike,
          config: str | SequenceConfig = DEFAULT.name, **kwargs) -> CamVidSequence:
    """Builds both splits from the CamVid folder ``manual_dir`` (if not built yet)."""
    return snippet_builder.prepare(make_builder(data_dir, config, **kwargs), manual_dir)
