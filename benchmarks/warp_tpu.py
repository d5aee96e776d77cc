"""The bilinear warp as libtpu compiles it: bytes accessed per chip by the compiler.

    python benchmarks/warp_tpu.py            # needs the tpu extra (libtpu); about 2 minutes

Compiles, for one chip of a v5e (no TPU attached), ``vsegjax.ops.warp``'s two forms of
``sample`` on [1, 512, 1024, C] with a [1, 512, 1024, 2] flow: the four gathers the CPU
and GPU get (one per neighbour) and the TPU's one gather of the packed 2x2
neighbourhood (what ``warp`` compiles to on a TPU), forward and forward+backward. It
prints the compiler's bytes accessed beside what the warp must move (image and flow
in, result out; for the backward, also the gradients of image and flow and the incoming
gradient) and their ratio.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import vsegjax.ops.warp  # noqa: F401 - the module, not the function ops exports
from vsegjax.core import tpu

W = sys.modules["vsegjax.ops.warp"]


def compiled_bytes(fn, shapes, sharding, backward: bool) -> tuple[float, float]:
    """(bytes accessed, FLOPs) of ``fn`` (and its VJP) compiled for ``sharding``'s device."""
    args = [jax.ShapeDtypeStruct(s, d, sharding=sharding) for s, d in shapes]

    def step(*a):
        if not backward:
            return fn(*a)
        out, vjp = jax.vjp(fn, *a)
        return vjp(jnp.ones_like(out))

    cost = jax.jit(step).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["bytes accessed"]), float(cost["flops"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", default="v5e:2x2")
    parser.add_argument("--size", default="512x1024")
    parser.add_argument("--channels", default="2,3,19,22,64")
    args = parser.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    device = tpu.devices(tpu.parse(args.topology))[0]
    sharding = NamedSharding(Mesh(np.array([device]), ("d",)), P())
    forms = {"four gathers": W._sample_corners, "packed quad": W._sample_quad}
    print(f"| C | dtype | pass | must move MB | {' | '.join(f'{f} GB (x)' for f in forms)} |")
    print("|---|---|---|---|" + "---|" * len(forms))
    for c in (int(v) for v in args.channels.split(",")):
        for dtype in (jnp.float32, jnp.bfloat16):
            item = jnp.dtype(dtype).itemsize
            image, flow = h * w * c * item, h * w * 2 * 4
            result = h * w * c * 4  # float32 whatever the input
            for backward in (False, True):
                must = image + flow + result + (result + image + flow if backward else 0)
                cells = []
                for form in forms.values():
                    def fn(x, f, form=form):
                        return form(x, W.pixel_grid(h, w) + f, "zeros")
                    start = time.time()
                    accessed, _ = compiled_bytes(fn, [((1, h, w, c), dtype), ((1, h, w, 2), jnp.float32)],
                                                 sharding, backward)
                    cells.append(f"{accessed / 1e9:.2f} ({accessed / must:.0f})")
                    print(f"  compiled in {time.time() - start:.1f} s", file=sys.stderr)
                print(f"| {c} | {jnp.dtype(dtype).name} | {'fwd+bwd' if backward else 'fwd'} | "
                      f"{must / 1e6:.0f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
