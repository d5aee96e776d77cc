"""TPU generations, topologies and the roofline: what ``vsegjax.compile`` compiles for.

Chip figures are Google's published specifications per chip (peak bfloat16 FLOP/s, HBM
capacity and bandwidth):

- v4:  https://cloud.google.com/tpu/docs/v4  (275 TFLOP/s, 32 GiB, 1200 GB/s)
- v5e: https://cloud.google.com/tpu/docs/v5e (197 TFLOP/s, 16 GiB, 819 GB/s)
- v5p: https://cloud.google.com/tpu/docs/v5p (459 TFLOP/s, 95 GiB, 2765 GB/s)
- v6e: https://cloud.google.com/tpu/docs/v6e (918 TFLOP/s, 32 GiB, 1640 GB/s)

A topology is named as libtpu names it (``v5e:4x4``, ``v4:2x2x4``) or as Cloud TPU names
its accelerator types (``v5e-16``, ``v4-32``: v4 and v5p count TensorCores, two per chip).
Hosts hold 2x2x1 chips, as on Cloud TPU VMs, so ``v5e:4x4`` is four hosts.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

GiB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    peak_flops: float      # bfloat16 FLOP/s per chip
    hbm_bytes: int         # HBM per chip
    hbm_bandwidth: float   # bytes/s per chip
    libtpu_name: str       # the generation in libtpu's topology names
    megacore: bool         # two TensorCores per chip, used as one device
    dims: int              # topology dimensions (2 = AxB, 3 = AxBxC)

    @property
    def ridge(self) -> float:
        """FLOPs per byte above which a step is compute-bound."""
        return self.peak_flops / self.hbm_bandwidth


CHIPS = {c.name: c for c in (
    Chip("v4", 275e12, 32 * GiB, 1200e9, "v4", True, 3),
    Chip("v5e", 197e12, 16 * GiB, 819e9, "v5e", False, 2),
    Chip("v5p", 459e12, 95 * GiB, 2765e9, "v5p", True, 3),
    Chip("v6e", 918e12, 32 * GiB, 1640e9, "v6e", False, 2),
)}
CHIPS_PER_HOST = (2, 2, 1)


@dataclasses.dataclass(frozen=True)
class Topology:
    chip: Chip
    shape: tuple[int, ...]  # chips along each axis

    @property
    def name(self) -> str:
        return f"{self.chip.libtpu_name}:{'x'.join(map(str, self.shape))}"

    @property
    def chips(self) -> int:
        return math.prod(self.shape)

    @property
    def hosts(self) -> int:
        return self.chips // math.prod(host_bounds(self))


def _slice_shape(chips: int, dims: int) -> tuple[int, ...]:
    """Cloud TPU's shape for a slice of ``chips`` chips (a power of two): 2x2, 2x4, 4x4,
    4x8, ... in 2D; 2x2x1, 2x2x2, 2x2x4, 2x4x4, 4x4x4, ... in 3D."""
    if chips < 1 or chips & (chips - 1):
        raise ValueError(f"{chips} chips")
    if dims == 2:
        k = chips.bit_length() - 1
        return (2 ** (k // 2), 2 ** (k - k // 2))
    if chips < 4:
        return (chips, 1, 1)
    shape = [2, 2, 1]
    while math.prod(shape) < chips:
        a, b, c = shape
        i = 2 if c <= b and b == a or c < b else 1 if b < c and a == b or b < a else 0
        shape[i] *= 2
    return tuple(shape)


def parse(name: str) -> Topology:
    """A ``Topology`` from ``v5e:4x4`` or ``v5e-16`` (see the module docstring)."""
    known = ", ".join(sorted(CHIPS))
    m = re.fullmatch(r"(v\d+[a-z]?)[:](\d+(?:x\d+)*)", name.strip())
    if m:
        chip = CHIPS.get(m.group(1)) or (CHIPS["v5p"] if m.group(1) == "v5" else None)
        if chip is None:
            raise ValueError(f"--topology={name}: unknown TPU generation {m.group(1)!r}; "
                             f"known: {known}")
        shape = tuple(int(x) for x in m.group(2).split("x"))
        if len(shape) != chip.dims or min(shape) < 1:
            raise ValueError(f"--topology={name}: a {chip.name} topology has {chip.dims} "
                             f"dimensions, e.g. {chip.name}:{'x'.join(['2'] * chip.dims)}")
        return Topology(chip, shape)
    m = re.fullmatch(r"(v\d+[a-z]?)-(\d+)", name.strip())
    if m and m.group(1) in CHIPS:
        chip = CHIPS[m.group(1)]
        count = int(m.group(2))
        chips = count // 2 if chip.megacore else count  # v4-32: 32 TensorCores, 16 chips
        try:
            return Topology(chip, _slice_shape(chips, chip.dims))
        except ValueError:
            raise ValueError(f"--topology={name}: {chips} chips is not a power of two; give "
                             f"the slice's shape as libtpu names it (e.g. {chip.name}:"
                             f"{'x'.join(['4'] * chip.dims)})") from None
    raise ValueError(f"--topology={name}: not a TPU topology; write it as libtpu does "
                     f"(v5e:4x4, v4:2x2x4) or as a Cloud TPU type (v5e-16, v4-32); "
                     f"generations: {known}")


def host_bounds(topology: Topology) -> tuple[int, int, int]:
    """Chips per host along each axis: 2x2x1, or the whole slice when it is smaller."""
    shape = tuple(topology.shape) + (1,) * (3 - len(topology.shape))
    return tuple(min(s, b) for s, b in zip(shape, CHIPS_PER_HOST))


def devices(topology: Topology) -> list[Any]:
    """The topology's abstract TPU devices (libtpu compiles for them; none is attached)."""
    # libtpu takes a machine-wide lock for the chips it drives; compiling drives none, so
    # two compiles (or a compile beside the tests) may share the machine.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        from jax.experimental import topologies
        desc = topologies.get_topology_desc(
            topology_name=topology.name, platform="tpu",
            chip_config_name="megacore" if topology.chip.megacore else "default",
            chips_per_host_bounds=host_bounds(topology))
    except Exception as e:  # noqa: BLE001 - libtpu's errors are RuntimeErrors of its own
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "tpu" in text.lower() and ("not found" in text.lower() or "unknown backend"
                                      in text.lower() or "no module" in text.lower()):
            raise RuntimeError("libtpu is not installed: pip install -e '.[tpu]' (it brings "
                               "jax[tpu])") from None
        raise ValueError(f"--topology={topology.name}: libtpu refused it: {text}") from None
    out = list(desc.devices)
    if len(out) != topology.chips:
        raise ValueError(f"--topology={topology.name}: libtpu gave {len(out)} devices for "
                         f"{topology.chips} chips")
    return out


def libtpu_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("libtpu") is not None


def roofline(flops: float, bytes_accessed: float, chip: Chip) -> dict[str, float]:
    """The step time the chip's peak and bandwidth allow, and the MFU that leaves."""
    compute_s, memory_s = flops / chip.peak_flops, bytes_accessed / chip.hbm_bandwidth
    step_s = max(compute_s, memory_s)
    return {"roofline_step_s": step_s, "compute_s": compute_s, "memory_s": memory_s,
            "mfu_bound": compute_s / step_s if step_s > 0 else 0.0,
            "flops_per_byte": flops / bytes_accessed if bytes_accessed else math.inf}
