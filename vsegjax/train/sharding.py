"""The device mesh and global batches: host batches placed on the mesh's data axis."""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vsegjax.data.pipeline import check_batch_size


def make_mesh(num_devices: int | None = None, axis: str = "data") -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (default: all of them)."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else int(num_devices)
    if not 1 <= n <= len(devices):
        raise ValueError(f"num_devices={n} but {len(devices)} devices are available")
    # Auto axes: plain data parallelism where XLA propagates shardings (the explicit
    # sharding mode, jax.make_mesh's default, would type-check every op's sharding).
    return jax.make_mesh((n,), (axis,), devices=devices[:n],
                         axis_types=(jax.sharding.AxisType.Auto,))


def _device_dtype(dtype: np.dtype) -> np.dtype | None:
    """The dtype a host array is placed with, or None for non-numeric leaves."""
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        return None
    return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


def to_global_batch(batch: Mapping[str, Any], mesh: Mesh, data_axis: str = "data"
                    ) -> dict[str, Any]:
    """Places this process' host batch on ``mesh`` as global arrays.

    Each numeric array (leading dim = per-process batch) becomes a ``jax.Array`` of
    global leading dim ``per_process * process_count``, sharded along that dim with
    ``NamedSharding(mesh, P(data_axis))`` via ``jax.make_array_from_process_local_data``.
    64-bit arrays are cast to 32 bits unless ``jax_enable_x64`` is on; non-numeric
    arrays (e.g. strings) are returned unchanged as host numpy arrays.
    """
    if data_axis not in mesh.shape:
        raise ValueError(f"mesh has no axis {data_axis!r} (axes {dict(mesh.shape)})")
    sharding = NamedSharding(mesh, P(data_axis))
    out: dict[str, Any] = {}
    sizes = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in batch.items()}
    local = {s for s in sizes.values()}
    if len(local) != 1 or None in local:
        raise ValueError(f"batch arrays need one common leading (batch) dim; got {sizes}")
    (local_batch,) = local
    check_batch_size(local_batch * jax.process_count(), mesh=mesh, data_axis=data_axis)
    for key, value in batch.items():
        arr = np.asarray(value)
        dtype = _device_dtype(arr.dtype)
        if dtype is None:
            out[key] = arr
            continue
        out[key] = jax.make_array_from_process_local_data(sharding, arr.astype(dtype,
                                                                              copy=False))
    return out


def batch_iterator(batches: Iterable[Mapping[str, Any]], mesh: Mesh,
                   data_axis: str = "data") -> Iterator[dict[str, Any]]:
    """Yields ``to_global_batch`` of each host batch, lazily (no read-ahead), so the
    state of the grain iterator passed in always matches the batches consumed:

        it = iter(ds)
        for step, batch in zip(range(steps), batch_iterator(it, mesh)):
            ... checkpoint it.get_state() with the model ...
    """
    for batch in batches:
        yield to_global_batch(batch, mesh, data_axis)
