"""grain input pipeline: random-access snippets -> augmented host batches -> global arrays.

    source = load_split("synthetic_video", "train", data_dir)     # or any Sequence of dicts
    mesh = make_mesh()                            # vsegjax.core.sharding
    ds = make_dataset(source, batch_size=16, seed=0, window=(2, 1), mesh=mesh,
                      augment=Augment(crop_size=(256, 256)))
    it = iter(ds)
    for batch in batch_iterator(it, mesh):      # vsegjax.core.sharding: global jax.Arrays
        ...
    state = it.get_state()                        # {"next_index": ...}: checkpoint with orbax
    it = iter(ds); it.set_state(state)            # resumes with exactly the next batch

Order of operations (``make_dataset``): shuffle -> repeat -> ``random_map`` (window
sampling + augmentation) -> batch into per-process chunks -> this process' chunks ->
``to_iter_dataset`` (threads) -> optional ``mp_prefetch`` (processes). Every process
builds the same global stream and reads only its rows of each global batch, so the
global batches are the same on 1 process or 64. The random map draws from grain's
per-record generator, seeded by (seed, position in the repeated stream), so a record's
augmentation does not depend on threads, workers, processes or the order of reading,
and each epoch gets fresh augmentations and a fresh shuffle.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Callable, Mapping, Sequence

import grain
import jax
import numpy as np
from jax.sharding import Mesh

from vsegjax.data import augment as augment_lib
from vsegjax.data import class_uniform as class_uniform_lib
from vsegjax.data import features

Example = dict[str, Any]


# --------------------------------------------------------------------------- sources


def load_split(name: str, split: str, data_dir: str | pathlib.Path | None = None, **kwargs):
    """``tfds.data_source(name, split=split, data_dir=data_dir)`` that never downloads or
    builds: raises FileNotFoundError naming the dataset and directory, and how to build
    it, when no prepared dataset is found there. ``data_dir=None`` means TFDS' default
    (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``). The builder class need not be
    imported: TFDS reads the prepared files on their own. Extra kwargs go to
    ``tfds.data_source``.
    """
    import tensorflow_datasets as tfds  # heavy import; only needed for real data

    if data_dir is None:
        data_dir = os.environ.get("TFDS_DATA_DIR") or tfds.core.constants.DATA_DIR
    root = pathlib.Path(data_dir).expanduser()
    search = root / name.split(":")[0]  # "name[/config][:version]"
    if not search.is_dir() or not any(search.rglob("dataset_info.json")):
        raise FileNotFoundError(_missing_message(name, search))
    try:
        return tfds.data_source(name, split=split, data_dir=str(root), download=False,
                                **kwargs)
    except Exception as e:  # tfds' own "not found" errors become FileNotFoundError
        not_found = type(e).__name__ == "DatasetNotFoundError" or (
            isinstance(e, AssertionError)  # registered builder, version / files missing
            and any(m in str(e) for m in ("cannot be loaded at version", "find data")))
        if not_found:
            first_line = (str(e).splitlines() or [""])[0]
            raise FileNotFoundError(f"{_missing_message(name, search)} (tfds: "
                                    f"{first_line})") from e
        raise


def _missing_message(name: str, where: Any) -> str:
    base = name.split(":")[0].split("/")[0]
    # Every dataset's builder script is data_prep/<name>.py (kitti_2015: kitti.py).
    script = {"kitti_2015": "kitti", "vsegjax_davis": "davis",
              "cityscapes_sequences": "cityscapes"}.get(base, base)
    how = f"build it with `python data_prep/{script}.py --data_dir=<data_dir>`"
    return f"dataset {name!r} not found: no prepared TFDS dataset in {where}; {how}"


# --------------------------------------------------------------------------- sharding


def process_chunks(num_chunks: int | None, process_index: int, process_count: int) -> slice:
    """The chunks (per-process batches) of the global stream process ``process_index``
    reads: every ``process_count``-th from its index, so global batch ``g`` is chunks
    ``g*count .. g*count+count-1``, i.e. stream records ``[g*B, (g+1)*B)`` in process
    order, whatever the number of processes. A finite stream is cut to a whole number of
    global batches, so every process yields as many batches."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} must lie in "
                         f"[0, process_count={process_count})")
    if num_chunks is None:
        return slice(process_index, None, process_count)
    usable = num_chunks // process_count * process_count
    if usable == 0:
        raise ValueError(f"{num_chunks} batch(es) cannot be shared by {process_count} "
                         f"processes")
    return slice(process_index, usable, process_count)


def batch_axes(mesh: Mesh, data_axis: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The mesh axes a batch is split over (``None``: all of them), each checked to exist."""
    axes = (tuple(mesh.axis_names) if data_axis is None else
            (data_axis,) if isinstance(data_axis, str) else tuple(data_axis))
    for axis in axes:
        if axis not in mesh.shape:
            raise ValueError(f"mesh has no axis {axis!r} (axes {dict(mesh.shape)})")
    return axes


def check_batch_size(batch_size: int, *, process_count: int | None = None,
                     mesh: Mesh | None = None, data_axis: str | Sequence[str] | None = None,
                     num_devices: int | None = None) -> int:
    """Returns the per-process batch size; raises ValueError when the global
    ``batch_size`` does not split over processes or the data axis' devices (the mesh's
    ``data_axis`` size, or the product of its axes' sizes, by default all of them; else
    ``num_devices``, else ``jax.device_count()``)."""
    count = jax.process_count() if process_count is None else int(process_count)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batch_size % count:
        raise ValueError(f"global batch_size {batch_size} is not divisible by the "
                         f"number of processes ({count})")
    if mesh is not None:
        axes = batch_axes(mesh, data_axis)
        devices = int(np.prod([mesh.shape[a] for a in axes]))
        what = " x ".join(repr(a) for a in axes)
        what = f"mesh axis {what}" if len(axes) == 1 else f"mesh axes {what}"
    else:
        devices = jax.device_count() if num_devices is None else int(num_devices)
        what = "devices"
    if batch_size % devices:
        raise ValueError(f"global batch_size {batch_size} is not divisible by the "
                         f"{devices} {what} it is split over")
    return batch_size // count


# --------------------------------------------------------------------------- transform


class SnippetTransform(grain.transforms.RandomMap):
    """Window sampling + augmentation of one record (picklable, for worker processes)."""

    def __init__(self, window: tuple[int, int] | None = None,
                 label_frame: str | int = "annotated",
                 augment: augment_lib.Augment | None = None,
                 num_classes: int | None = None):
        self.window = None if window is None else (int(window[0]), int(window[1]))
        self.label_frame = label_frame
        self.augment = augment
        self.num_classes = num_classes

    def check(self, ex: Mapping[str, Any]) -> None:
        if self.num_classes is not None and "labels" in ex:
            # A wrong id would otherwise be clipped silently by the loss's gather.
            features.check_labels(ex["labels"], self.num_classes,
                                  where=f"snippet {ex.get('snippet_id', '?')} field 'labels'")

    def random_map(self, element: Mapping[str, Any], rng: np.random.Generator) -> Example:
        ex = {k: np.asarray(v) for k, v in element.items()}
        self.check(ex)
        if self.window is not None:
            ex = augment_lib.sample_window(ex, *self.window, self.label_frame, rng)
        if self.augment is not None:
            return self.augment.apply(ex, rng)
        return augment_lib.finalize(ex)


def _derive_seeds(seed: int) -> tuple[int, int]:
    """(shuffle seed, augmentation seed), shared by all processes: every process builds
    the same global stream and reads its own chunks of it."""
    shuffle_seed = np.random.SeedSequence([int(seed), 0]).generate_state(1)[0]
    # The trailing 0 keeps the seed single-process runs have always used.
    map_seed = np.random.SeedSequence([int(seed), 1, 0]).generate_state(1)[0]
    return int(shuffle_seed), int(map_seed)


def _ensure_absl_flags_parsed() -> None:
    """grain's worker processes read absl flags (``--grain_*``); outside an absl app
    (tests, Colab) nothing parsed them, so accept the defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_dataset(source: Sequence[Mapping[str, Any]], *, batch_size: int, seed: int,
                 window: tuple[int, int] | None = None,
                 label_frame: str | int = "annotated",
                 augment: augment_lib.Augment | Mapping[str, Any] | None = None,
                 shuffle: bool = True, num_epochs: int | None = None,
                 drop_remainder: bool = True, shard_by_process: bool = True,
                 worker_count: int = 0, read_threads: int = 4,
                 prefetch_buffer_size: int | None = None,
                 mesh: Mesh | None = None, data_axis: str | Sequence[str] | None = None,
                 process_index: int | None = None, process_count: int | None = None,
                 batch_fn: Callable[[Example], Example] | None = None,
                 num_classes: int | None = None,
                 class_uniform: bool = False,
                 ) -> grain.IterDataset:
    """A deterministic, checkpointable ``grain.IterDataset`` of host batches.

    Args:
      source: anything with ``__len__`` and ``__getitem__`` returning snippet dicts
        (``tfds.data_source(...)``, a list of dicts, ...).
      batch_size: GLOBAL batch size; each process yields ``batch_size // process_count``.
      seed: shuffle and augmentation seed.
      window: (frames_before, frames_after) kept around the labelled frame, or None to
        keep the whole snippet.
      label_frame: "annotated", "random" or a frame index (see ``sample_window``).
      augment: an ``Augment`` (or a dict / ConfigDict of its fields), or None for no
        augmentation (dtypes are still converted by ``augment.finalize``).
      shuffle: global shuffle of this process' shard, reshuffled every epoch.
      num_epochs: None repeats forever.
      drop_remainder: drop a final partial batch (only matters with ``num_epochs``).
      shard_by_process: the global stream (shuffle, augmentation, batches) is the same
        for any number of processes and each process yields its rows of each global
        batch (``process_chunks``), so a run's data do not depend on the topology;
        False: every process yields the whole stream's first ``batch_size // count``.
      worker_count: > 0 runs the pipeline in that many processes (``mp_prefetch``).
      read_threads, prefetch_buffer_size: grain ``ReadOptions``: threads that each
        assemble whole batches, and how many batches are read ahead (default
        ``max(2, read_threads)``; snippets are large, grain's default is 500).
      mesh, data_axis: used only to check that ``batch_size`` splits over the data
        axes (default all the mesh's axes; without a mesh: ``jax.device_count()``).
      process_index, process_count: override ``jax.process_index()/process_count()``
        (tests, or simulating a multi-host layout).
      batch_fn: a deterministic function applied to each host batch (e.g. classical
        optical flow computed on the host); runs in the reading threads/workers.
      num_classes: when given, every snippet's labels are checked to lie in
        [0, num_classes) or be 255; a bad id raises naming the snippet.
      class_uniform: draw each example by picking a class uniformly, then a snippet
        whose labelled frame holds it, then a crop centred on one of its pixels
        (``vsegjax.data.class_uniform``; needs ``num_classes``; indexes the shard once).

    Returns:
      An IterDataset whose iterator supports ``get_state()`` / ``set_state()``; the
      state is a small JSON-serialisable dict (``{"next_index": n}`` without workers).
    """
    process = jax.process_index() if process_index is None else int(process_index)
    count = jax.process_count() if process_count is None else int(process_count)
    per_process = check_batch_size(batch_size, process_count=count, mesh=mesh,
                                   data_axis=data_axis)
    if not isinstance(augment, (augment_lib.Augment, type(None))):
        augment = augment_lib.Augment.from_config(augment)
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}")
    if len(source) == 0:
        raise ValueError("the data source is empty")

    shuffle_seed, map_seed = _derive_seeds(seed)
    ds = grain.MapDataset.source(source)
    transform = SnippetTransform(window, label_frame, augment, num_classes)
    if class_uniform:
        if num_classes is None:
            raise ValueError("class_uniform sampling needs num_classes")
        frame = label_frame if label_frame in ("annotated",) or isinstance(label_frame, int) \
            else "any"
        index = class_uniform_lib.class_index(ds, num_classes, frame)
        ds = grain.MapDataset.range(len(ds)).repeat(num_epochs).random_map(
            class_uniform_lib.ClassUniformTransform(ds, index, transform.window, label_frame,
                                                    augment, transform.check), seed=map_seed)
    else:
        if shuffle:
            ds = ds.shuffle(seed=shuffle_seed)
        ds = ds.repeat(num_epochs).random_map(transform, seed=map_seed)
    # Batch on the MapDataset: batch k is always records [k*B, (k+1)*B) of the stream,
    # whatever the number of threads or worker processes (IterDataset.batch after
    # mp_prefetch would batch within each worker's slice instead).
    ds = ds.batch(per_process, drop_remainder=drop_remainder)
    if shard_by_process and count > 1:
        # Lazy: a process computes (reads, augments) only the chunks it yields.
        ds = ds.slice(process_chunks(None if num_epochs is None else len(ds), process, count))
    if batch_fn is not None:
        ds = ds.map(batch_fn)
    buffer = prefetch_buffer_size or max(2, read_threads)
    ids = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                               prefetch_buffer_size=buffer))
    if worker_count > 0:
        _ensure_absl_flags_parsed()
        ids = ids.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return ids
