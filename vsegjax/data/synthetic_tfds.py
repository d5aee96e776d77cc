"""TFDS builder ``synthetic_video``: the synthetic snippets written as ArrayRecord.

    python data_prep/synthetic_video.py --data_dir=~/tensorflow_datasets --config=default

(The builder class must live in an importable module, not ``__main__``, for TFDS to find
its resources; hence the separate script.)

TFDS writes into a ``*.incomplete*`` folder and renames it when the split is complete,
so an interrupted build never looks finished; the next build starts over.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os

import tensorflow_datasets as tfds

from vsegjax.data import snippet_builder, synthetic


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


class SyntheticVideo(snippet_builder.SnippetBuilder):
    """Procedural street-like video snippets with exact labels, flow and occlusion."""

    BUILDER_CONFIGS = [DEFAULT, TINY, EXTRA]
    DEFAULT_CONFIG_NAME = "default"

    def __init__(self, *, num_workers: int | None = None, **kwargs):
        super().__init__(num_workers=num_workers if num_workers is not None
                         else (os.cpu_count() or 1), **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        v = self.builder_config.video
        return self.dataset_info_from_configs(
            description=(f"Synthetic video snippets, classes {list(v.classes)}; "
                         f"generator parameters {dataclasses.asdict(v)}."),
            features=snippet_builder.snippet_features(
                v.num_frames, (v.height, v.width), frame_index=False,
                flow=("fwd", "bwd", "degraded")),
            supervised_keys=None,
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        cfg = self.builder_config
        return {"train": self._generate_examples("train", cfg.num_train),
                "validation": self._generate_examples("validation", cfg.num_validation)}

    def _generate_examples(self, split: str, count: int):
        # Generation is pure Python/NumPy, so it runs in processes, not threads.
        fn = functools.partial(synthetic.generate_snippet, self.builder_config.video, split)
        for index, example in snippet_builder.bounded_map(
                fn, range(count), self.num_workers, window=4 * self.num_workers, catch=(),
                processes=True):
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
