"""``vsegjax.compile``: the train and evaluation steps compiled for a TPU topology that is
not attached (``core.aot``, ``core.tpu``). The compiling tests need libtpu (the ``tpu``
extra); ``.ci/run`` installs it and fails if they skip."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from vsegjax.core import tpu

ROOT = pathlib.Path(__file__).resolve().parents[1]
needs_libtpu = pytest.mark.skipif(not tpu.libtpu_available(),
                                  reason="libtpu is not installed (pip install -e '.[tpu]')")


def test_topology_names_both_ways():
    assert tpu.parse("v5e:4x4") == tpu.parse("v5e-16")
    assert tpu.parse("v4-32").shape == (2, 2, 4)  # 32 TensorCores = 16 chips
    assert tpu.parse("v4-32").chips == 16 and tpu.parse("v4-32").hosts == 4
    assert tpu.parse("v5e-8").shape == (2, 4)
    assert tpu.parse("v5e:2x2").hosts == 1 and tpu.parse("v5e:1x1").hosts == 1
    assert [tpu.parse(f"v4-{n}").shape for n in (8, 16, 64, 128)] == [
        (2, 2, 1), (2, 2, 2), (2, 4, 4), (4, 4, 4)]


@pytest.mark.parametrize("name,match", [
    ("v9-8", "not a TPU topology"), ("v5e:4", "2 dimensions"), ("v7x:2x2", "unknown TPU"),
    ("v5p-384", "not a power of two"), ("gpu", "not a TPU topology")])
def test_bad_topology_names_are_one_line(name, match):
    with pytest.raises(ValueError, match=match) as info:
        tpu.parse(name)
    assert "\n" not in str(info.value) and name in str(info.value)


def test_roofline_takes_the_slower_of_compute_and_memory():
    v5e = tpu.CHIPS["v5e"]
    assert v5e.ridge == pytest.approx(197e12 / 819e9)  # about 240 FLOP per byte
    memory_bound = tpu.roofline(flops=2.23e12, bytes_accessed=29e9, chip=v5e)
    assert memory_bound["roofline_step_s"] == pytest.approx(29e9 / 819e9)
    assert memory_bound["mfu_bound"] == pytest.approx((2.23e12 / 197e12) / (29e9 / 819e9))
    compute_bound = tpu.roofline(flops=1e15, bytes_accessed=1e9, chip=v5e)
    assert compute_bound["mfu_bound"] == 1.0


def test_missing_libtpu_is_one_line(monkeypatch):
    from vsegjax import compile as compile_app
    monkeypatch.setattr(tpu, "libtpu_available", lambda: False)
    with pytest.raises(SystemExit, match="libtpu is not installed; pip install"):
        compile_app.main(["compile"])


def _compile(*args, tmp_path):
    out = tmp_path / "report.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    result = subprocess.run([sys.executable, "-m", "vsegjax.compile", *args, f"--out={out}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    return result, (json.loads(out.read_text()) if out.exists() else None)


@needs_libtpu
def test_small_configs_compile_for_v5e_and_the_compiler_agrees_with_the_shardings(tmp_path):
    """The static and GRFP stages of the main job compile for v5e:2x2; they fit; the
    compiler's argument bytes per chip are the train state as sharded plus the batch
    shard (plus the 2 guard scalars), and with fsdp the parameters are split 4 ways."""
    result, reports = _compile("--config=configs/grfp_synthetic.py", "--topology=v5e:2x2",
                               tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = {(r["stage"], r["step"]): r for r in reports}
    assert set(steps) == {("static", "train"), ("static", "eval"), ("grfp", "train"),
                          ("grfp", "eval")}
    for r in reports:
        assert r["fits"] and r["flops_per_chip"] > 0 and r["bytes_accessed_per_chip"] > 0
        assert r["chips"] == 4 and r["topology"] == "v5e:2x2"
        assert 0 < r["mfu_bound"] <= 1 and r["roofline_step_s"] > 0
    for key in (("static", "train"), ("grfp", "train")):
        # At least what the shardings place on a chip; more by the TPU's tiled layouts,
        # which pad the minor dimensions (3 colour channels, 32-wide kernels).
        r = steps[key]
        placed = r["state_bytes_per_chip"] + r["batch_bytes_per_chip"]
        assert placed <= r["argument_bytes"] <= 4 * placed, r
    # The GRFP step sees T = 7 frames through the static net: more work than one frame.
    assert steps["grfp", "train"]["flops_per_chip"] > 3 * steps["static", "train"]["flops_per_chip"]
    # FSDP over the 4 chips: the large parameters are split 4 ways.
    result, sharded = _compile("--config=configs/static_synthetic.py", "--topology=v5e-4",
                               "--config.mesh.fsdp=4", "--config.mesh.fsdp_min_size=1024",
                               "--noeval", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (r,) = sharded
    whole = steps["static", "train"]["param_bytes_per_chip"]
    assert whole / 4 <= r["param_bytes_per_chip"] < whole / 2
    assert r["argument_bytes"] < steps["static", "train"]["argument_bytes"]


@needs_libtpu
@pytest.mark.parametrize("flag,match", [
    ("--topology=v5e-3", "power of two"),
    ("--config.mesh.fsdp=3", "mesh.fsdp=3 does not divide the 4 devices"),
    ("--config.input.batch_size=6", "batch_size 6 is not divisible")])
def test_bad_input_is_one_line(flag, match, tmp_path):
    args = ["--config=configs/static_synthetic.py", "--topology=v5e:2x2", flag]
    result, _ = _compile(*args, tmp_path=tmp_path)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and match in last, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@needs_libtpu
def test_a_tpu_compiles_the_warp_as_one_gather_per_pixel():
    """``warp`` compiled for a v5e is the packed-neighbourhood form: by the compiler's
    count it reads a tenth of the bytes of the four gathers the CPU compiles."""
    import sys

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from vsegjax.ops import warp
    w = sys.modules["vsegjax.ops.warp"]
    device = tpu.devices(tpu.parse("v5e:2x2"))[0]
    sharding = NamedSharding(Mesh(np.array([device]), ("d",)), PartitionSpec())
    args = [jax.ShapeDtypeStruct((1, 512, 1024, c), jnp.float32, sharding=sharding)
            for c in (19, 2)]

    def accessed(fn):
        cost = jax.jit(fn).lower(*args).compile().cost_analysis()
        return (cost[0] if isinstance(cost, (list, tuple)) else cost)["bytes accessed"]

    four = accessed(lambda x, f: w._sample_corners(x, w.pixel_grid(512, 1024) + f, "zeros"))
    assert accessed(warp) < four / 10


@needs_libtpu
def test_a_tpu_gets_xla_s_convolution_and_gradient_for_the_stgru_gates():
    """``conv2d_same`` picks its CPU forms by the platform compiled for: compiled for a
    v5e, its 7x7 38 -> 38 convolution forward and backward costs exactly what
    ``lax.conv_general_dilated``'s does, by the compiler's count."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from vsegjax.ops import conv
    device = tpu.devices(tpu.parse("v5e:2x2"))[0]
    sharding = NamedSharding(Mesh(np.array([device]), ("d",)), PartitionSpec())
    args = (jax.ShapeDtypeStruct((1, 256, 256, 38), jnp.bfloat16, sharding=sharding),
            jax.ShapeDtypeStruct((7, 7, 38, 38), jnp.bfloat16, sharding=sharding))

    def cost(fn):
        grad = jax.grad(lambda x, w: jnp.sum(fn(x, w).astype(jnp.float32) ** 2), (0, 1))
        found = jax.jit(grad).lower(*args).compile().cost_analysis()
        found = found[0] if isinstance(found, (list, tuple)) else found
        return found["flops"], found["bytes accessed"]

    assert cost(conv.conv2d_same) == cost(conv._conv)


@needs_libtpu
def test_the_cycles_breakdown_counts_loop_bodies_per_iteration_and_names_our_lines():
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from vsegjax.core import hlo_costs
    from vsegjax.ops import conv
    device = tpu.devices(tpu.parse("v5e:2x2"))[0]
    sharding = NamedSharding(Mesh(np.array([device]), ("d",)), PartitionSpec())
    args = (jax.ShapeDtypeStruct((1, 128, 128, 64), jnp.float32, sharding=sharding),
            jax.ShapeDtypeStruct((3, 3, 64, 64), jnp.float32, sharding=sharding))

    def compiled(steps):
        def run(x, w):
            return jax.lax.scan(lambda h, _: (jnp.tanh(conv.conv2d_same(h, w)), None), x,
                                None, length=steps)[0]
        return jax.jit(run).lower(*args).compile()

    def flops(c):
        found = c.cost_analysis()
        return (found[0] if isinstance(found, (list, tuple)) else found)["flops"]

    one, six = compiled(1), compiled(6)
    once, (many, lines, instructions) = (hlo_costs.breakdown(c.as_text()) for c in (one, six))
    assert 5 * once[0] < many < 7 * once[0]
    # cost_analysis() counts the loop body once; loop_extra adds the other 5 iterations.
    assert flops(six) < 1.1 * flops(one)
    extra = hlo_costs.loop_extra(six.as_text())
    assert extra["loops"] == [6] and hlo_costs.loop_extra(one.as_text())["flops"] == 0
    conv_flops = 2 * 128 * 128 * 9 * 64 * 64
    # (The compiled convolution runs on a padded row: 136 columns for 128.)
    assert extra["flops"] == pytest.approx(5 * conv_flops, rel=0.1)
    assert (flops(six) + extra["flops"]) == pytest.approx(6 * flops(one), rel=0.05)
    assert sum(c.share for c in lines if c.where.startswith("ops/conv.py:")) > 0.3
    assert any(c.where.startswith("ops/conv.py:") and "[" in c.where for c in instructions)
    assert abs(sum(c.share for c in lines) - 1) < 0.01


@needs_libtpu
def test_a_train_step_that_calls_the_host_is_refused_for_a_pod():
    """OpenCV flow through ``jax.pure_callback`` inside a step lowers, for a TPU, to host
    transfers from one chip; the compile refuses such a step in one line."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from vsegjax.core import aot
    from vsegjax.models.flow_providers import OpenCVFlow
    devices = tpu.devices(tpu.parse("v5e:2x2"))
    sharding = NamedSharding(Mesh(np.array(devices), ("data",)), PartitionSpec("data"))
    frames = jax.ShapeDtypeStruct((4, 2, 16, 16, 3), jnp.float32, sharding=sharding)
    host_flow = OpenCVFlow("farneback").as_jax_fn(need="fwd")
    with pytest.raises(ValueError, match="stage s: the train step calls back to the host"):
        aot.check_no_host_calls(
            jax.jit(lambda f: host_flow(f)[0].sum()).lower(frames).as_text(), "s")
    aot.check_no_host_calls(jax.jit(lambda f: f.sum()).lower(frames).as_text(), "s")


def test_libtpu_on_a_cpu_machine_is_not_a_cloud_tpu(monkeypatch):
    """With the tpu extra installed for compiling (libtpu, no chips), ``vsegjax.main``
    used to call ``jax.distributed.initialize()`` as on a TPU VM and stop with
    "coordinator_address should be defined"."""
    import glob
    import importlib.util

    from vsegjax.core import distributed
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "libtpu" else real(name, *a))
    monkeypatch.setattr(glob, "glob", lambda pattern: [])
    assert not distributed.on_cloud_tpu()
    assert not distributed.initialize(distributed.ProcessFlags(None, None, None, 60))
    monkeypatch.setattr(glob, "glob", lambda pattern: ["/dev/accel0"] if "accel" in pattern
                        else [])
    assert distributed.on_cloud_tpu()


def test_a_step_that_does_not_fit_is_reported_not_raised():
    """libtpu refuses a step whose temporaries exceed the HBM (as efc_cityscapes on a
    v5e-16 did): the report says it does not fit and by how much."""
    from vsegjax.core import aot
    error = RuntimeError("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory "
                         "required for HLO temporaries (39.02G) exceeds available HBM "
                         "(15.75G).\nmore")
    r = aot._out_of_memory(error, "efc", "train", tpu.parse("v5e-16"), 16, 12.0)
    assert not r.fits and r.temp_bytes == int(39.02 * 2 ** 30) and "\n" not in r.error
    assert "DOES NOT FIT: RESOURCE_EXHAUSTED" in aot.format_report(r)
