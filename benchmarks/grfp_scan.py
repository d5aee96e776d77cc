"""Compile time and per-frame time of the GRFP forward pass for T = 4 and T = 16.

    python benchmarks/grfp_scan.py [--height 64 --width 128 --classes 10 --batch 1]

The STGRU runs as a lax.scan, so the compile time should not grow with T (the step is
traced once); the per-frame time should stay flat.
"""

import argparse
import time

import jax
import jax.numpy as jnp

from vsegjax.methods.grfp.stgru import GRFP


def measure(num_frames: int, args) -> tuple[float, float]:
    model = GRFP(num_classes=args.classes, mode="forward", kernel_size=7)
    b, t, h, w, c = args.batch, num_frames, args.height, args.width, args.classes
    key = jax.random.PRNGKey(0)
    logits = jax.random.normal(key, (b, t, h, w, c))
    frames = jax.random.uniform(key, (b, t, h, w, 3))
    flows = jnp.zeros((b, t - 1, h, w, 2))
    params = model.init(key, logits, frames, None, flows, t - 1)

    def forward(params, logits, frames, flows):
        return model.apply(params, logits, frames, None, flows, t - 1)["logits"]

    start = time.perf_counter()
    compiled = jax.jit(forward).lower(params, logits, frames, flows).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(params, logits, frames, flows))
    start = time.perf_counter()
    for _ in range(args.repeats):
        jax.block_until_ready(compiled(params, logits, frames, flows))
    per_frame = (time.perf_counter() - start) / args.repeats / t
    return compile_s, per_frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind}; B={args.batch} "
          f"{args.height}x{args.width} C={args.classes}, 7x7 STGRU, forward mode")
    results = {t: measure(t, args) for t in (4, 16)}
    for t, (compile_s, per_frame) in results.items():
        print(f"T={t:2d}: compile {compile_s:.2f} s, {1000 * per_frame:.2f} ms per frame")
    ratio = results[16][0] / results[4][0]
    print(f"compile time ratio T=16 / T=4: {ratio:.2f}")


if __name__ == "__main__":
    main()
