"""Dataset registry: from a config's ``data`` block to a TFDS builder and its data sources."""

from __future__ import annotations

import bisect
import itertools
import os
import re
from typing import Any, Callable, Sequence

import ml_collections

from vsegjax.data import default_data_dir, synthetic, synthetic_tfds

# name -> (builder factory(data_config), how to build it (for errors), viz palette name)
_REGISTRY: dict[str, tuple[Callable[[ml_collections.ConfigDict], Any], str, str]] = {}


def data_block(name: str = "synthetic_video", config: str | None = None,
               class_names: Sequence[str] | None = None, **fields: Any
               ) -> ml_collections.ConfigDict:
    """A config's ``data`` block: the dataset ``name`` (a registered TFDS builder) in its
    ``config`` ("" = the dataset's own default), under ``data_dir``; built on first use
    when ``build_if_missing`` and it can be (``manual_dir``: the files a user downloaded).
    ``class_names`` name the label ids in reports. Left out, ``config`` and
    ``class_names`` are the synthetic dataset's own for it, else "" and none."""
    synthetic_data = name == "synthetic_video"
    if config is None:
        config = "default" if synthetic_data else ""
    if class_names is None:
        class_names = synthetic.CLASSES if synthetic_data else ()
    defaults = dict(name=name, config=config, data_dir=default_data_dir(),
                    build_if_missing=True, num_workers=0, manual_dir="",
                    class_names=list(class_names))
    unknown = sorted(set(fields) - set(defaults))
    if unknown:
        raise TypeError(f"data: unknown fields {unknown}; it has {sorted(defaults)}")
    defaults.update(fields)
    return ml_collections.ConfigDict(defaults)


def resolve(data: Any) -> ml_collections.ConfigDict:
    """A data block with the fields it lacks taken from ``data_block``'s defaults for its
    dataset (a notebook may pass ``dict(name=..., data_dir=...)``)."""
    given = data.to_dict() if hasattr(data, "to_dict") else dict(data)
    block = data_block(*([given["name"]] if "name" in given else [])).to_dict()
    block.update(given)
    return ml_collections.ConfigDict(block)


def register(name: str, factory: Callable[[ml_collections.ConfigDict], Any], how: str,
             palette: str | int) -> None:
    _REGISTRY[name] = (factory, how, palette)


def _synthetic_builder(data: ml_collections.ConfigDict):
    workers = data.num_workers or None
    return synthetic_tfds.make_builder(data.data_dir, data.config or "default",
                                       num_workers=workers)


register("synthetic_video", _synthetic_builder,
         "python data_prep/synthetic_video.py --data_dir={data_dir} --config={config}",
         "synthetic")


def _camvid_builder(data: ml_collections.ConfigDict):
    from vsegjax.data import camvid  # imported on use: each builder module is sizeable
    return camvid.make_builder(data.data_dir, data.config or "default")


register("camvid", _camvid_builder,
         "python data_prep/camvid.py --manual_dir=<the CamVid folder> --data_dir={data_dir}",
         "camvid")


def _camvid_sequence_builder(data: ml_collections.ConfigDict):
    from vsegjax.data import camvid_sequence
    return camvid_sequence.make_builder(data.data_dir, data.config or
                                        camvid_sequence.DEFAULT.name)


register("camvid_sequence", _camvid_sequence_builder,
         "python data_prep/camvid.py --sequence --manual_dir=<the CamVid folder> "
         "--data_dir={data_dir}", "camvid")


def _flow_builder(name: str):
    def factory(data: ml_collections.ConfigDict):
        from vsegjax.data import flow_datasets
        return flow_datasets.make_builder(name, data.data_dir, data.config or None)
    return factory


for _name, _script in (("sintel", "sintel"), ("flying_chairs", "flying_chairs"),
                       ("kitti_2015", "kitti")):
    register(_name, _flow_builder(_name),
             f"python data_prep/{_script}.py --manual_dir=<the downloaded folder> "
             "--data_dir={data_dir}", "cityscapes")


def _cityscapes_builder(data: ml_collections.ConfigDict):
    from vsegjax.data import cityscapes
    return cityscapes.make_builder(data.data_dir, data.config or "default")


register("cityscapes_sequences", _cityscapes_builder,
         "python data_prep/cityscapes.py --manual_dir=<the Cityscapes folder> "
         "--data_dir={data_dir} --config={config}", "cityscapes")


def _davis_builder(data: ml_collections.ConfigDict):
    from vsegjax.data import video_datasets
    return video_datasets.make_builder("davis", data.data_dir, data.config or "2016")


register("vsegjax_davis", _davis_builder,
         "python data_prep/davis.py --manual_dir=<the DAVIS folder> --data_dir={data_dir} "
         "--config={config}", 255)  # any instance id gets a colour


def _prepared_builder(name: str):
    """Datasets whose configs are made per use (paths, windows): read back what the
    data_prep script prepared under ``data_dir/<name>/<config>/``, by config name."""
    def factory(data: ml_collections.ConfigDict):
        import tensorflow_datasets as tfds
        root = os.path.join(os.path.expanduser(data.data_dir), name, data.config)
        versions = sorted(d for d in os.listdir(root) if d[:1].isdigit()) \
            if os.path.isdir(root) else []
        if not data.config or not versions:
            raise FileNotFoundError(
                f"dataset {name}: no prepared config {data.config!r} in {root}; "
                f"prepare it with data_prep/ (its last line prints the config name) and set "
                f"data.config to that name")
        return tfds.builder_from_directory(os.path.join(root, versions[-1]))
    return factory


register("user_video", _prepared_builder("user_video"),
         "python data_prep/user_video.py --frames=<folder or video> --data_dir={data_dir}", 255)


def get_builder(data: ml_collections.ConfigDict):
    """The TFDS builder named by ``data.name`` (``data.config``, ``data.data_dir``)."""
    data = resolve(data)
    if data.name not in _REGISTRY:
        raise ValueError(f"config field data.name: unknown dataset {data.name!r}; "
                         f"known: {sorted(_REGISTRY)}")
    return _REGISTRY[data.name][0](data)


def palette_name(data: ml_collections.ConfigDict) -> str | int:
    """The ``vsegjax.viz`` palette of the dataset's classes."""
    data = resolve(data)
    return _REGISTRY[data.name][2]


def how_to_build(data: ml_collections.ConfigDict) -> str:
    data = resolve(data)
    return _REGISTRY[data.name][1].format(data_dir=data.data_dir, config=data.config)


def ensure_built(data: ml_collections.ConfigDict):
    """Returns the prepared builder, building it first when ``data.build_if_missing`` allows."""
    data = resolve(data)
    builder = get_builder(data)
    if not builder.is_prepared():
        if not data.build_if_missing:
            raise FileNotFoundError(
                f"dataset {data.name}/{builder.builder_config.name} not found under "
                f"{os.path.expanduser(data.data_dir)}; build it with: {how_to_build(data)}")
        manual_dir = data.manual_dir
        if manual_dir:  # real datasets are prepared from the files a user downloaded
            import tensorflow_datasets as tfds
            manual_dir = os.path.expanduser(manual_dir)
            if not os.path.isdir(manual_dir):
                raise FileNotFoundError(f"config field data.manual_dir: {manual_dir} is not "
                                        f"a folder; {how_to_build(data)}")
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
        else:
            builder.download_and_prepare()
    return builder


class NamedSource:
    """A random-access source whose read errors name the file the record lives in.

    ArrayRecord reports a truncated or corrupt shard as a bare RuntimeError; this wrapper
    turns it into an IOError naming the shard and the record, so a user knows what to
    rebuild.
    """

    def __init__(self, source, filenames: list[str], shard_lengths: list[int], where: str,
                 limit: int | None = None):
        self._source = source
        self._files = filenames
        self._ends = list(itertools.accumulate(shard_lengths))
        self._where = where
        self._len = len(source) if limit is None else min(int(limit), len(source))

    def __len__(self) -> int:
        return self._len

    def _file_of(self, index: int) -> str:
        shard = bisect.bisect_right(self._ends, index)
        return self._files[min(shard, len(self._files) - 1)] if self._files else "?"

    def __getitem__(self, index: int):
        if not -self._len <= int(index) < self._len:
            raise IndexError(f"{self._where}: record {index} outside [0, {self._len})")
        try:
            return self._source[index]
        except Exception as e:  # noqa: BLE001 - re-raised with the file named
            raise IOError(f"{self._where}: cannot read record {index} from "
                          f"{self._file_of(int(index))}: the file is corrupt or truncated "
                          f"({type(e).__name__}: {e}); rebuild the dataset") from e

    def __getitems__(self, indices):
        return [self[i] for i in indices]


def snippet_length(data: ml_collections.ConfigDict) -> int:
    """Frames per snippet of the dataset, from its features (no data is read)."""
    return int(get_builder(data).info.features["frames"].shape[0])


def open_split(data: ml_collections.ConfigDict, split: str) -> NamedSource:
    """The ``split`` of the configured dataset as a random-access source (built if allowed).

    ``"train[:N]"`` keeps the first N records (e.g. fewer labelled snippets).
    """
    data = resolve(data)
    limit = None
    head = re.fullmatch(r"(\w+)\[:(\d+)\]", split)
    if head:
        split, limit = head.group(1), int(head.group(2))
    builder = ensure_built(data)
    if split not in builder.info.splits:
        raise ValueError(f"dataset {data.name}: no split {split!r}; has "
                         f"{sorted(builder.info.splits)}")
    info = builder.info.splits[split]
    files = [os.path.join(builder.data_dir, f) for f in info.filenames]
    try:
        source = builder.as_data_source(split)
    except Exception as e:  # noqa: BLE001
        raise IOError(f"dataset {data.name}/{builder.builder_config.name} split {split!r} "
                      f"in {builder.data_dir} cannot be opened ({type(e).__name__}: {e}); "
                      f"files: {files}") from e
    return NamedSource(source, files, list(info.shard_lengths),
                       f"{data.name}/{builder.builder_config.name} {split}", limit)
