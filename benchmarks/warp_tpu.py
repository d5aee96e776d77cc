"""The bilinear warp as libtpu compiles it: bytes accessed per chip by the compiler.

    python benchmarks/warp_tpu.py            # needs the tpu extra (libtpu); about 2 minutes

Compiles, for one chip of a v5e (no TPU attached), ``vsegjax.ops.warp``'s two forms of
``sample`` on [1, 512, 1024, C] with a [1, 512, 1024, 2] flow: the four gathers the CPU
and GPU get (one per neighbour) and the TPU's one gather of the packed 2x2
neighbourhood (what ``warp`` compiles to on a TPU), forward and forward+backward. It
prints the compiler's bytes accessed beside what the warp must move (image and flow
in, result out; for the backward, also the gradients of image and flow and the incoming
gradient) and their ratio.

``--conv`` instead compiles the STGRU's 7x7 3 -> 1 gate convolution (W_ir) both ways a
TPU could run it, XLA's convolution and ``ops.conv``'s shifted sums, forward+backward,
and prints libtpu's estimated cycles (``core.hlo_costs``) beside the bytes.
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
    parser.add_argument("--conv", action="store_true", help="the W_ir convolution instead")
    args = parser.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    device = tpu.devices(tpu.parse(args.topology))[0]
    sharding = NamedSharding(Mesh(np.array([device]), ("d",)), P())
    if args.conv:
        return conv_table(h, w, sharding)
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
                    shapes = [((1, h, w, c), dtype), ((1, h, w, 2), jnp.float32)]
                    accessed, _ = compiled_bytes(fn, shapes, sharding, backward)
                    cells.append(f"{accessed / 1e9:.2f} ({accessed / must:.0f})")
                    print(f"  compiled in {time.time() - start:.1f} s", file=sys.stderr)
                print(f"| {c} | {jnp.dtype(dtype).name} | {'fwd+bwd' if backward else 'fwd'} | "
                      f"{must / 1e6:.0f} | " + " | ".join(cells) + " |", flush=True)


def conv_table(h: int, w: int, sharding) -> None:
    from vsegjax.core import hlo_costs
    from vsegjax.ops import conv
    print("| form | dtype | estimated Mcycles | GB accessed |")
    print("|---|---|---|---|")
    for name, form in (("XLA convolution", conv._conv), ("shifted sums", conv._shifted_sum)):
        for dtype in (jnp.float32, jnp.bfloat16):
            def loss(x, k, form=form):
                return jnp.sum(form(x, k.astype(x.dtype)).astype(jnp.float32))
            args = [jax.ShapeDtypeStruct((1, h, w, 3), dtype, sharding=sharding),
                    jax.ShapeDtypeStruct((7, 7, 3, 1), jnp.float32, sharding=sharding)]
            compiled = jax.jit(jax.grad(loss, (0, 1))).lower(*args).compile()
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, (list, tuple)) else cost
            cycles = hlo_costs.breakdown(compiled.as_text())[0]
            print(f"| {name} | {jnp.dtype(dtype).name} | {cycles / 1e6:.1f} | "
                  f"{cost['bytes accessed'] / 1e9:.2f} |", flush=True)


if __name__ == "__main__":
    main()
