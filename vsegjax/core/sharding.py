"""The device mesh, global batches and where the train state lives on the mesh.

The mesh has two axes, ``data`` and ``fsdp`` (``mesh.fsdp`` devices; default 1). Batches
are split over both. With ``fsdp > 1`` each large parameter and its optimiser state is
sharded along ``fsdp`` (fully sharded data parallelism: XLA gathers a weight where it is
used and reduce-scatters its gradient); everything else is replicated.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vsegjax.data.pipeline import batch_axes, check_batch_size

BATCH_AXES = ("data", "fsdp")


def make_mesh(num_devices: int | None = None, fsdp: int = 1,
              devices: Sequence[Any] | None = None) -> Mesh:
    """A ``data x fsdp`` mesh over the first ``num_devices`` of ``devices`` (default: all
    of JAX's; ``vsegjax.compile`` passes a TPU topology's abstract devices)."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices) if num_devices is None else int(num_devices)
    if not 1 <= n <= len(devices):
        raise ValueError(f"num_devices={n} but {len(devices)} devices are available")
    fsdp = int(fsdp)
    if fsdp < 1 or n % fsdp:
        raise ValueError(f"mesh.fsdp={fsdp} does not divide the {n} devices of the mesh "
                         f"(mesh.num_devices); pick a divisor of {n}")
    # Auto axes: XLA propagates shardings (the explicit sharding mode, jax.make_mesh's
    # default, would type-check every op's sharding).
    return jax.make_mesh((n // fsdp, fsdp), BATCH_AXES, devices=devices[:n],
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)


def fsdp_spec(shape: Sequence[int], fsdp: int, min_size: int, axis: str = "fsdp") -> P:
    """Shards the largest dimension that ``fsdp`` divides, for arrays of at least
    ``min_size`` elements; smaller ones (biases, norms, counters) are replicated."""
    if fsdp == 1 or math.prod(shape) < min_size:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp == 0:
            return P(*([None] * dim), axis)
    return P()


def state_shardings(abstract_state: Any, mesh: Mesh, min_size: int = 2 ** 16) -> Any:
    """A ``NamedSharding`` per leaf of ``abstract_state`` (shapes only): FSDP over the
    mesh's ``fsdp`` axis for large arrays (parameters and their optimiser moments alike,
    as they share shapes), replicated otherwise."""
    fsdp = mesh.shape.get("fsdp", 1)
    return jax.tree.map(
        lambda x: NamedSharding(mesh, fsdp_spec(x.shape, fsdp, min_size)), abstract_state)


def bytes_per_device(tree: Any) -> int:
    """The bytes of ``tree``'s arrays (or ``ShapeDtypeStruct``s with shardings) each
    device holds (NamedShardings split evenly, so every device holds the same)."""
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
               for x in jax.tree.leaves(tree))


def batch_size_over(mesh: Mesh, data_axis: str | Sequence[str] = BATCH_AXES) -> int:
    """How many devices a batch sharded over ``data_axis`` is split over."""
    return math.prod(mesh.shape[a] for a in batch_axes(mesh, data_axis))


def _device_dtype(dtype: np.dtype) -> np.dtype | None:
    """The dtype a host array is placed with, or None for non-numeric leaves."""
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        return None
    return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


def to_global_batch(batch: Mapping[str, Any], mesh: Mesh,
                    data_axis: str | Sequence[str] = BATCH_AXES) -> dict[str, Any]:
    """Places this process' host batch on ``mesh`` as global arrays.

    Each numeric array (leading dim = per-process batch) becomes a ``jax.Array`` of
    global leading dim ``per_process * process_count``, sharded along that dim with
    ``NamedSharding(mesh, P(data_axis))`` (by default over all the mesh's axes) via
    ``jax.make_array_from_process_local_data``.
    64-bit arrays are cast to 32 bits unless ``jax_enable_x64`` is on; non-numeric
    arrays (e.g. strings) are returned unchanged as host numpy arrays.
    """
    sharding = NamedSharding(mesh, P(batch_axes(mesh, data_axis)))
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
                   data_axis: str | Sequence[str] = BATCH_AXES
                   ) -> Iterator[dict[str, Any]]:
    """Yields ``to_global_batch`` of each host batch, lazily (no read-ahead), so the
    state of the grain iterator passed in always matches the batches consumed:

        it = iter(ds)
        for step, batch in zip(range(steps), batch_iterator(it, mesh)):
            ... checkpoint it.get_state() with the model ...
    """
    for batch in batches:
        yield to_global_batch(batch, mesh, data_axis)


# ------------------------------------------------------------- host-side reports

def rows_to_mesh(rows: Any, mesh: Mesh, data_axis: str | Sequence[str] = BATCH_AXES) -> Any:
    """This process' rows (a pytree of host arrays with a common leading dim, e.g. from
    ``data.eval_batches(per_process=True, mesh=mesh)``) as global arrays sharded over
    ``mesh``'s batch axes, so a jitted function on them runs on every device of every
    process; ``rows_from_mesh`` hands each process its rows of the result back."""
    check_batch_size(_leading_dim(rows) * jax.process_count(), mesh=mesh, data_axis=data_axis)
    rows = jax.tree.map(lambda x: np.asarray(x).astype(_device_dtype(np.asarray(x).dtype),
                                                       copy=False), rows)
    return multihost_utils.host_local_array_to_global_array(
        rows, mesh, P(batch_axes(mesh, data_axis)))


def rows_from_mesh(out: Any, mesh: Mesh, data_axis: str | Sequence[str] = BATCH_AXES) -> Any:
    """This process' rows of each global array in ``out`` (leading dim = the global batch
    of ``rows_to_mesh``), as numpy arrays in the order they were put; resharded along the
    batch first where XLA chose another layout for a result."""
    local = multihost_utils.global_array_to_host_local_array(
        out, mesh, P(batch_axes(mesh, data_axis)))
    return jax.tree.map(np.asarray, local)


def to_mesh(tree: Any, mesh: Mesh) -> Any:
    """``tree`` (parameters, say) usable beside arrays on ``mesh``: leaves already on the
    mesh's devices are kept as they are (replicated or FSDP-sharded by the trainer), host
    arrays and arrays on other local devices (a checkpoint restored on one device) are
    replicated over the mesh."""
    devices = set(mesh.devices.flat)
    replicated = NamedSharding(mesh, P())

    def place(x):
        if isinstance(x, jax.Array) and x.sharding.device_set == devices:
            return x
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            raise ValueError(f"an array on devices {sorted(d.id for d in x.sharding.device_set)}"
                             f" spans other processes but not the mesh's devices "
                             f"{sorted(d.id for d in devices)}")
        return jax.device_put(x, replicated)
    return jax.tree.map(place, tree)


def _leading_dim(tree: Any) -> int:
    sizes = {np.shape(x)[0] for x in jax.tree.leaves(tree)}
    if len(sizes) != 1:
        raise ValueError(f"rows need one common leading (batch) dim; got {sorted(sizes)}")
    return sizes.pop()
