"""TFDS builder ``synthetic_video``: the synthetic snippets written as ArrayRecord.

    python data_prep/synthetic_video.py --data_dir=~/tensorflow_datasets --config=default

(The builder class must live in an importable module, not ``__main__``, for TFDS to find
its resources; hence the separate script.)

TFDS writes into a ``*.incomplete*`` folder and renames it when the split is complete,
so an interrupted build never looks finished; the next build starts over.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import multiprocessing
import os
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from vsegjax.data import synthetic

_Encoding = tfds.features.Encoding


@dataclasses.dataclass(eq=False)
class SyntheticVideoConfig(tfds.core.BuilderConfig):
    video: synthetic.SyntheticConfig = synthetic.SyntheticConfig()
    num_train: int = 200
    num_validation: int = 40


def config_name(video: synthetic.SyntheticConfig, num_train: int, num_validation: int) -> str:
    """A directory-safe name that changes whenever any generation parameter does."""
    key = repr((dataclasses.astuple(video), num_train, num_validation)).encode()
    digest = hashlib.sha1(key).hexdigest()[:8]
    return (f"h{video.height}w{video.width}t{video.num_frames}"
            f"n{num_train}-{num_validation}s{video.seed}-{digest}")


DEFAULT = SyntheticVideoConfig(name="default", description="128x256, 7 frames, 200/40 snippets")
TINY = SyntheticVideoConfig(
    name="tiny", description="48x64, 5 frames, 16/8 snippets, for tests",
    video=synthetic.SyntheticConfig(height=48, width=64, num_frames=5, label_index=3,
                                    num_objects=(2, 4)),
    num_train=16, num_validation=8)
# Other scenes (generator seed 1) with the default's look: unlabelled video for EFC's "+UD".
EXTRA = SyntheticVideoConfig(
    name="extra", description="128x256, 7 frames, 200/8 snippets of other scenes (seed 1)",
    video=synthetic.SyntheticConfig(seed=1), num_train=200, num_validation=8)


def _bounded_imap(fn, items, workers: int, window: int) -> Iterator:
    """Ordered parallel map that keeps at most ``window`` results in flight (bounded memory)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    # "spawn": the parent may already hold JAX/TF threads, which fork does not survive.
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        pending = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class SyntheticVideo(tfds.core.GeneratorBasedBuilder):
    """Procedural street-like video snippets with exact labels, flow and occlusion."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [DEFAULT, TINY, EXTRA]
    DEFAULT_CONFIG_NAME = "default"

    def __init__(self, *, num_workers: int | None = None, **kwargs):
        self._num_workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
        super().__init__(file_format="array_record", **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        v = self.builder_config.video
        t, h, w = v.num_frames, v.height, v.width

        def tensor(shape, dtype, encoding=_Encoding.BYTES):
            return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=encoding)

        return self.dataset_info_from_configs(
            description=(f"Synthetic video snippets, classes {list(v.classes)}; "
                         f"generator parameters {dataclasses.asdict(v)}."),
            features=tfds.features.FeaturesDict({
                "frames": tensor((t, h, w, 3), np.uint8),
                "labels": tensor((t, h, w), np.uint8, _Encoding.ZLIB),
                "has_label": tensor((t,), np.bool_),
                "label_index": tfds.features.Scalar(np.int32),
                "flow_fwd": tensor((t - 1, h, w, 2), np.float32, _Encoding.ZLIB),
                "flow_bwd": tensor((t - 1, h, w, 2), np.float32, _Encoding.ZLIB),
                "occ_fwd": tensor((t - 1, h, w), np.uint8, _Encoding.ZLIB),
                "occ_bwd": tensor((t - 1, h, w), np.uint8, _Encoding.ZLIB),
                "degraded": tensor((t,), np.uint8),
                "snippet_id": tfds.features.Scalar(np.int64),
            }),
            supervised_keys=None,
            # Record i is snippet i, so "snippet 3 of validation" means one thing everywhere.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        cfg = self.builder_config
        return {"train": self._generate_examples("train", cfg.num_train),
                "validation": self._generate_examples("validation", cfg.num_validation)}

    def _generate_examples(self, split: str, count: int):
        fn = functools.partial(synthetic.generate_snippet, self.builder_config.video, split)
        for index, example in enumerate(_bounded_imap(fn, range(count), self._num_workers,
                                                      window=4 * self._num_workers)):
            yield index, example


def make_builder(data_dir: str, config: str | SyntheticVideoConfig = "default",
                 **kwargs) -> SyntheticVideo:
    """The builder for a named config ("default", "tiny") or a custom ``SyntheticVideoConfig``."""
    return SyntheticVideo(config=config, data_dir=os.path.expanduser(data_dir), **kwargs)


def custom_config(num_train: int, num_validation: int, **video_kwargs) -> SyntheticVideoConfig:
    """A config for any generator parameters; its name encodes them, so rebuilds are reused."""
    video = synthetic.SyntheticConfig(**video_kwargs)
    return SyntheticVideoConfig(name=config_name(video, num_train, num_validation), video=video,
                                num_train=num_train, num_validation=num_validation)


def build(data_dir: str, config: str | SyntheticVideoConfig = "default",
          num_workers: int | None = None) -> SyntheticVideo:
    """Builds the dataset if it is not there yet (progress bars come from TFDS)."""
    builder = make_builder(data_dir, config, num_workers=num_workers)
    builder.download_and_prepare()
    return builder
