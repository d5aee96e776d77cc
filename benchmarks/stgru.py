"""The STGRU at the machine's limit: vsegjax against PyTorch and against sgemm, one run.

    python benchmarks/stgru.py                      # every part, about 15 minutes on 2 cores
    python benchmarks/stgru.py --parts step,warp    # some of them

Parts (``--parts``):

* ``step``: one STGRU step (GRFP eqs. 2-6, C = 19, 7x7, batch 1, float32) at 512x512 and
  1024x2048: vsegjax's fused step, the unfused equations, and the same equations written
  plainly in PyTorch (``benchmarks/stgru_torch.py``, same weights; outputs compared),
  with this run's sgemm throughput (2048^3, the better of XLA and torch). Repetitions
  are interleaved and medians printed, so a busy machine slows all of them alike.
* ``warp``: the bilinear warp of [1, 512, 1024, 19] float32 against a plain copy of the
  same array and torch's ``grid_sample``, in GB/s of input read plus output written.
* ``profile``: where the step's time goes: each stage of the fused step timed on its own
  (its inputs materialised), and the layout XLA chose for the gate convolution.
* ``train``: the GRFP training step at the main job's sizes (batch 8, 64x128, C = 10,
  7x7, forward mode, window of T frames ending at the labelled one) for T = 2, 4, 8 with
  and without remat: compile time, steps/s and peak RSS, each in a fresh process (peak
  RSS is a process's high-water mark); and T = 16 for compile time against T = 4.
* ``inference``: GRFP forward inference at 1024x2048: a ResNet-50 PSP static net
  (random weights) and one STGRU step per frame, flow given, frames/s.

torch is optional (``pip install -e '.[convert]'``); without it the PyTorch columns are
skipped. On a GPU, ``--parts step --sizes 512x512`` prints the step there (the GRFP
paper's Titan X: 35 ms).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vsegjax.methods.grfp import stgru_equations as steps
from vsegjax.ops.warp import warp

try:
    import torch

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    import stgru_torch
except ImportError:  # the PyTorch columns are optional
    torch = stgru_torch = None

C, K = 19, 7


def _median_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each callable (already warmed up), repetitions interleaved."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def _warm(fns: dict[str, Callable[[], object]]) -> None:
    for fn in fns.values():
        fn()


def stgru_inputs(h: int, w: int, c: int = C, seed: int = 0):
    """Random STGRU parameters (small kernels, as trained ones are) and one step's inputs."""
    rng = np.random.default_rng(seed)

    def a(*shape, lo=0.0, hi=1.0):
        return jnp.asarray(rng.uniform(lo, hi, shape), jnp.float32)

    params = {"W_ir": a(K, K, 3, 1, lo=-0.05, hi=0.05), "b_r": a(1),
              **{n: a(K, K, c, c, lo=-0.05, hi=0.05) for n in ("W_xh", "W_hh", "W_xz", "W_hz")},
              "b_z": a(c, lo=-1), "lambda": jnp.asarray(1.0)}
    inputs = (jax.nn.softmax(4 * a(1, h, w, c), -1), jax.nn.softmax(4 * a(1, h, w, c), -1),
              a(1, h, w, 3), a(1, h, w, 3), a(1, h, w, 2, lo=-3, hi=3))
    return params, inputs


def step_flops(h: int, w: int, c: int = C) -> float:
    """FLOPs of the step's convolutions (the rest is O(HWC)): 4 C->C and one 3->1, 7x7."""
    return 2.0 * h * w * K * K * (4 * c * c + 3)


def sgemm(repeats: int) -> dict[str, float]:
    """GFLOP/s of a 2048^3 float32 matmul through XLA and (if present) torch."""
    n = 2048
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    mm = jax.jit(jnp.matmul)
    fns = {"xla": lambda: mm(a, a).block_until_ready()}
    if torch is not None:
        t = torch.from_numpy(np.asarray(a))
        fns["torch"] = lambda: t @ t
    _warm(fns)
    return {k: 2 * n ** 3 / (ms / 1000) / 1e9 for k, ms in _median_ms(fns, repeats).items()}


def part_step(args) -> None:
    print(f"== STGRU step, C={C}, {K}x{K}, batch 1, float32, {jax.devices()[0].device_kind}")
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.split("x"))
        params, inputs = stgru_inputs(h, w)
        fused, unfused = jax.jit(steps.stgru_step), jax.jit(steps.stgru_step_unfused)
        fns = {"vsegjax": lambda: jax.block_until_ready(fused(params, *inputs)),
               "vsegjax unfused": lambda: jax.block_until_ready(unfused(params, *inputs))}
        if torch is not None and jax.default_backend() == "cpu":
            torch.set_num_threads(args.threads)
            tp = stgru_torch.torch_params(jax.device_get(params))
            nchw = [torch.from_numpy(np.asarray(v).transpose(0, 3, 1, 2).copy()) for v in inputs]

            def run_torch():
                with torch.inference_mode():
                    return stgru_torch.stgru_step(tp, *nchw)
            fns["torch"] = run_torch
            diff = np.abs(run_torch()[1].numpy().transpose(0, 2, 3, 1)
                          - np.asarray(fused(params, *inputs)[1])).max()
            print(f"{size}: max |logits vsegjax - torch| = {diff:.2e}")
        _warm(fns)
        ms = _median_ms(fns, args.repeats)
        peak = max(sgemm(args.repeats).values()) if jax.default_backend() == "cpu" else None
        flops = step_flops(h, w)
        for name, t in ms.items():
            line = f"{size} {name:16s} {t:8.1f} ms  {flops / t / 1e6:6.1f} GFLOP/s"
            if peak:
                line += f"  {flops / t / 1e6 / peak:.2f} of sgemm"
            if "torch" in ms and name != "torch":
                line += f"  {ms['torch'] / t:.2f}x torch"
            print(line)
        if peak:
            print(f"{size} sgemm (this run)     {peak:.1f} GFLOP/s")


def part_warp(args) -> None:
    h, w, c = 512, 1024, C
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.uniform(0, 1, (1, h, w, c)), jnp.float32)
    flow = jnp.asarray(rng.uniform(-3, 3, (1, h, w, 2)), jnp.float32)
    warp_j, copy_j = jax.jit(warp), jax.jit(lambda a: a + 0.0)  # XLA turns a + 0 into a copy
    fns = {"vsegjax warp": lambda: warp_j(x, flow).block_until_ready(),
           "copy": lambda: copy_j(x).block_until_ready()}
    if torch is not None:
        tx = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
        tflow = torch.from_numpy(np.asarray(flow).transpose(0, 3, 1, 2).copy())
        grid = stgru_torch.flow_grid(tflow)
        fns["torch grid_sample"] = lambda: stgru_torch.grid_warp(tx, grid)
    _warm(fns)
    ms = _median_ms(fns, args.repeats)
    moved = 2 * x.size * 4 / 1e9
    print(f"== warp of [1, {h}, {w}, {c}] float32 (GB/s = (input + output bytes) / time)")
    for name, t in ms.items():
        print(f"{name:18s} {t:7.1f} ms  {moved / (t / 1000):5.2f} GB/s  "
              f"{ms['copy'] / t:.2f} of copy")


def part_profile(args) -> None:
    h, w = (int(v) for v in args.profile_size.split("x"))
    params, (h_prev, x, frame, prev_frame, flow) = stgru_inputs(h, w)
    c = C
    centred = h_prev - 1.0 / c
    warped = jax.jit(lambda: steps.warp(jnp.concatenate([centred, prev_frame], -1), flow))()
    i_diff = frame - warped[..., c:]
    r = steps._gate_r(params, i_diff, jnp.float32)
    rw = r * warped[..., :c]
    both_in = jnp.concatenate([x - 1.0 / c, rw], -1)
    kernel = steps.fused_gate_kernel(params)
    both = steps.conv2d(both_in, kernel)
    stages = {
        "warp (one gather, C+3 channels)": (
            lambda a, b, f: steps.warp(jnp.concatenate([a, b], -1), f),
            (centred, prev_frame, flow)),
        "r: photometric error, 3->1 conv, tanh": (
            lambda p, d: steps._gate_r(p, d, jnp.float32), (params, i_diff)),
        "concat[x, r.w]": (lambda a, b, q: jnp.concatenate([a - 1.0 / c, b * q], -1),
                           (x, r, warped[..., :c])),
        "gate conv 2C->2C (eqs. 4-5)": (steps.conv2d, (both_in, kernel)),
        "z, eq. 6, softmax": (
            lambda p, o, q: steps._output(p, jax.nn.sigmoid(o[..., c:] + p["b_z"]), q,
                                          o[..., :c], jnp.float32), (params, both, rw)),
        "whole fused step": (steps.stgru_step, (params, h_prev, x, frame, prev_frame, flow)),
    }
    fns = {}
    for name, (fn, fargs) in stages.items():
        jitted = jax.jit(fn)
        fns[name] = (lambda j, a: lambda: jax.block_until_ready(j(*a)))(jitted, fargs)
    _warm(fns)
    ms = _median_ms(fns, args.repeats)
    print(f"== where the {h}x{w} step's time goes (each stage alone, inputs materialised)")
    parts = sum(t for n, t in ms.items() if n != "whole fused step")
    for name, t in ms.items():
        share = "" if name == "whole fused step" else f"  {100 * t / parts:4.1f}% of the stages"
        print(f"{name:40s} {t:7.1f} ms{share}")
    hlo = jax.jit(steps.conv2d).lower(both_in, kernel).compile().as_text()
    convs = [ln.strip() for ln in hlo.splitlines() if " convolution(" in ln]
    print("gate convolution as XLA compiled it:", convs[0][:200] if convs else "(fused away)")


def _train_child(t_len: int, remat: bool, steps_n: int) -> dict:
    """One process: compile and run the GRFP training step, report time and peak RSS."""
    import optax

    from vsegjax.methods.grfp.stgru import GRFP
    b, h, w, c = 8, 64, 128, 10
    model = GRFP(c, "forward", kernel_size=K, remat=remat)
    rng = np.random.default_rng(0)
    static = jnp.asarray(rng.normal(0, 2, (b, t_len, h, w, c)), jnp.float32)
    frames = jnp.asarray(rng.uniform(0, 1, (b, t_len, h, w, 3)), jnp.float32)
    flows = jnp.asarray(rng.uniform(-2, 2, (b, t_len - 1, h, w, 2)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, c, (b, h, w)))
    lp = t_len - 1
    params = model.init(jax.random.PRNGKey(0), static, frames, None, flows, lp)["params"]
    tx = optax.adam(1e-3)

    def train_step(params, opt_state, static, frames, flows, labels):
        def loss(p):
            logp = model.apply({"params": p}, static, frames, None, flows, lp)["logits"]
            return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], -1))
        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    opt_state = tx.init(params)
    start = time.perf_counter()
    compiled = jax.jit(train_step).lower(params, opt_state, static, frames, flows,
                                         labels).compile()
    compile_s = time.perf_counter() - start
    compiled_rss_mb = _peak_rss_mb()
    temp_mb = compiled.memory_analysis().temp_size_in_bytes / 2 ** 20
    params, opt_state, _ = jax.block_until_ready(
        compiled(params, opt_state, static, frames, flows, labels))
    start = time.perf_counter()
    for _ in range(steps_n):
        params, opt_state, _ = compiled(params, opt_state, static, frames, flows, labels)
    jax.block_until_ready(params)
    rate = steps_n / (time.perf_counter() - start)
    return {"T": t_len, "remat": remat, "compile_s": compile_s, "steps_per_s": rate,
            "xla_temp_mb": temp_mb, "rss_after_compile_mb": compiled_rss_mb,
            "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    """This process's peak RSS. Linux's ru_maxrss carries the parent's RSS over the
    fork and exec that started it, so /proc's VmHWM (this address space only) first."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(t_len: int, remat: bool, steps_n: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--_train_child",
                          f"{t_len},{int(remat)},{steps_n}"], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def part_train(args) -> None:
    print("== GRFP training step: batch 8, 64x128, C=10, 7x7, forward, Adam (fresh process "
          "each)")
    print(f"{'T':>3} {'remat':>6} {'compile s':>10} {'steps/s':>8} {'XLA temp MB':>12} "
          f"{'RSS compiled MB':>16} {'peak RSS MB':>12}")
    rows = []
    for t_len in (2, 4, 8):
        for remat in (False, True):
            rows.append(_child(t_len, remat, args.train_steps))
            r = rows[-1]
            print(f"{r['T']:3d} {str(r['remat']):>6} {r['compile_s']:10.2f} "
                  f"{r['steps_per_s']:8.2f} {r['xla_temp_mb']:12.0f} "
                  f"{r['rss_after_compile_mb']:16.0f} {r['peak_rss_mb']:12.0f}", flush=True)
    t4 = next(r for r in rows if r["T"] == 4 and not r["remat"])
    t16 = _child(16, False, 1)
    print(f"compile time T=16 / T=4: {t16['compile_s']:.2f} / {t4['compile_s']:.2f} s = "
          f"{t16['compile_s'] / t4['compile_s']:.2f}")


def part_inference(args) -> None:
    from vsegjax.models.segmenter import make_segmenter
    h, w = 1024, 2048
    net = make_segmenter({"backbone": "resnet50", "head": "psp", "num_classes": C})
    frame = jnp.zeros((1, h, w, 3))
    variables = jax.jit(net.init)(jax.random.PRNGKey(0), frame)
    params, (h_prev, _, _, _, flow) = stgru_inputs(h, w)

    @jax.jit
    def per_frame(variables, params, h_prev, frame, prev_frame, flow):
        x = jax.nn.softmax(net.apply(variables, frame), -1)
        return steps.stgru_step(params, h_prev, x, frame, prev_frame, flow)[0]

    state = jax.block_until_ready(per_frame(variables, params, h_prev, frame, frame, flow))
    start = time.perf_counter()
    for _ in range(args.frames):
        state = per_frame(variables, params, state, frame, frame, flow)
    jax.block_until_ready(state)
    fps = args.frames / (time.perf_counter() - start)
    print(f"== GRFP inference at {h}x{w}, ResNet-50 PSP + STGRU, flow given: "
          f"{fps:.3f} frames/s ({1 / fps:.1f} s per frame)")


PARTS = {"step": part_step, "warp": part_warp, "profile": part_profile, "train": part_train,
         "inference": part_inference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="step,warp,profile,train,inference")
    parser.add_argument("--sizes", default="512x512,1024x2048")
    parser.add_argument("--profile_size", default="512x512")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch's CPU threads")
    parser.add_argument("--train_steps", type=int, default=5)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--_train_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._train_child:
        t_len, remat, n = (int(v) for v in args._train_child.split(","))
        print(json.dumps(_train_child(t_len, bool(remat), n)))
        return
    for name in args.parts.split(","):
        if name not in PARTS:
            sys.exit(f"--parts: unknown part {name!r}; choose from {', '.join(PARTS)}")
        PARTS[name](args)


if __name__ == "__main__":
    main()
