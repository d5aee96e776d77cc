"""Dataset registry: from a config's ``data`` block to a TFDS builder and its data sources."""

from __future__ import annotations

import os
from typing import Any, Callable

import ml_collections

from vsegjax.data import synthetic_tfds

# name -> (builder factory(data_config), how to build it (for errors), viz palette name)
_REGISTRY: dict[str, tuple[Callable[[ml_collections.ConfigDict], Any], str, str]] = {}


def register(name: str, factory: Callable[[ml_collections.ConfigDict], Any], how: str,
             palette: str) -> None:
    _REGISTRY[name] = (factory, how, palette)


def _synthetic_builder(data: ml_collections.ConfigDict):
    workers = data.get("num_workers", 0) or None
    return synthetic_tfds.make_builder(data.data_dir, data.get("config", "default"),
                                       num_workers=workers)


register("synthetic_video", _synthetic_builder,
         "python data_prep/synthetic_video.py --data_dir={data_dir} --config={config}",
         "synthetic")


def get_builder(data: ml_collections.ConfigDict):
    """The TFDS builder named by ``data.name`` (``data.config``, ``data.data_dir``)."""
    if data.name not in _REGISTRY:
        raise ValueError(f"config field data.name: unknown dataset {data.name!r}; "
                         f"known: {sorted(_REGISTRY)}")
    return _REGISTRY[data.name][0](data)


def palette_name(data: ml_collections.ConfigDict) -> str:
    """The ``vsegjax.viz`` palette of the dataset's classes."""
    return _REGISTRY[data.name][2]


def how_to_build(data: ml_collections.ConfigDict) -> str:
    return _REGISTRY[data.name][1].format(data_dir=data.data_dir, config=data.get("config", ""))


def ensure_built(data: ml_collections.ConfigDict):
    """Returns the prepared builder, building it first when ``data.build_if_missing`` allows."""
    builder = get_builder(data)
    if not builder.is_prepared():
        if not data.get("build_if_missing", False):
            raise FileNotFoundError(
                f"dataset {data.name}/{builder.builder_config.name} not found under "
                f"{os.path.expanduser(data.data_dir)}; build it with: {how_to_build(data)}")
        builder.download_and_prepare()
    return builder
