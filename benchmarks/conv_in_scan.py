"""Backward pass of a 7x7 C->C convolution inside lax.scan: XLA's conv vs conv2d_same.

    python benchmarks/conv_in_scan.py

Prints seconds per gradient evaluation of a 4-step scan on [8, 64, 128, 10] (the STGRU
shape of configs/grfp_synthetic.py) for: XLA's convolution in a scan, the same loop
unrolled, and vsegjax.ops.conv2d_same in a scan.
"""

import time

import jax
import jax.numpy as jnp

from vsegjax.ops import conv2d_same


def _xla(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _loss(conv, unroll):
    def loss(k, x0):
        def body(h, _):
            return jnp.tanh(conv(h, k)), None
        h, _ = jax.lax.scan(body, x0, None, length=4, unroll=unroll)
        return jnp.sum(h ** 2)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def main(repeats: int = 5) -> None:
    x0 = jax.random.normal(jax.random.PRNGKey(0), (8, 64, 128, 10))
    k = 0.05 * jax.random.normal(jax.random.PRNGKey(1), (7, 7, 10, 10))
    print(f"device: {jax.devices()[0].device_kind}")
    for name, conv, unroll in [("xla conv, scan", _xla, 1), ("xla conv, unrolled", _xla, True),
                               ("conv2d_same, scan", conv2d_same, 1)]:
        grad = _loss(conv, unroll)
        jax.block_until_ready(grad(k, x0))
        t = time.perf_counter()
        for _ in range(repeats):
            jax.block_until_ready(grad(k, x0))
        print(f"{name:22s} {(time.perf_counter() - t) / repeats:.3f} s per gradient")


if __name__ == "__main__":
    main()
