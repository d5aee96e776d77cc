"""Sharded parameters (FSDP over the mesh's ``fsdp`` axis) and gradient accumulation
train as the plain replicated step does, on 8 fake CPU devices."""

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from _toy_task import ToyTask, toy_config
from vsegjax.core import train
from vsegjax.core import sharding
from vsegjax.core import writers
def _run(tmp_path, name, num_steps=4, task_kwargs=None, **fields):
    cfg = toy_config(num_steps=num_steps, log_every=1)
    cfg.batch_size = fields.pop("batch_size", 8)
    cfg.mesh = ml_collections.ConfigDict(dict(num_devices=0, fsdp=fields.pop("fsdp", 1),
                                              fsdp_min_size=fields.pop("fsdp_min_size", 1)))
    cfg.train.update(fields)
    result = train(cfg, str(tmp_path / name), ToyTask(cfg, **(task_kwargs or {})))
    rows = writers.read_jsonl(str(tmp_path / name / "metrics.jsonl"))
    return result, [r["loss"] for r in rows if "loss" in r]


def _assert_same(a, b, tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


@pytest.mark.slow
def test_fsdp_trains_as_replicated_with_parameters_sharded(tmp_path):
    assert jax.device_count() == 8
    replicated, losses = _run(tmp_path, "replicated")
    for fsdp in (8, 4):  # meshes 1 x 8 and 2 x 4
        sharded, sharded_losses = _run(tmp_path, f"fsdp{fsdp}", fsdp=fsdp)
        np.testing.assert_allclose(sharded_losses, losses, rtol=1e-5, atol=1e-5)
        _assert_same(sharded.state.params, replicated.state.params, 1e-5)
        # The conv kernel [3, 3, 3, 8] is split on its 8 output channels, and so are its
        # Adam moments; the step counter stays replicated.
        kernel = sharded.state.params["Conv_0"]["kernel"]
        assert kernel.sharding.spec == P(None, None, None, "fsdp")
        assert kernel.addressable_shards[0].data.shape == (3, 3, 3, 8 // fsdp)
        moments = [x for x in jax.tree.leaves(sharded.state.opt_state)
                   if x.shape == (3, 3, 3, 8)]
        assert moments and all(m.sharding.spec == P(None, None, None, "fsdp")
                               for m in moments)
        assert sharded.state.step.sharding.spec == P()


def test_fsdp_rule_and_bytes_per_device():
    assert sharding.fsdp_spec((3, 3, 64, 256), 8, 1) == P(None, None, None, "fsdp")
    assert sharding.fsdp_spec((1000, 24), 8, 1) == P("fsdp")  # the largest divisible dim
    assert sharding.fsdp_spec((1001, 24), 8, 1) == P(None, "fsdp")
    assert sharding.fsdp_spec((7, 9), 8, 1) == P()  # nothing divides: replicated
    assert sharding.fsdp_spec((512,), 8, 1024) == P()  # small: replicated
    mesh = sharding.make_mesh(8, fsdp=8)
    tree = {"w": jax.ShapeDtypeStruct((64, 256), np.float32), "b": jax.ShapeDtypeStruct(
        (256,), np.float32)}
    shardings = sharding.state_shardings(tree, mesh, min_size=1024)
    placed = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          tree, shardings)
    assert sharding.bytes_per_device(placed) == 64 * 256 * 4 // 8 + 256 * 4


def test_an_fsdp_axis_that_does_not_divide_the_devices_is_named(tmp_path):
    with pytest.raises(ValueError, match="mesh.fsdp=3 does not divide the 8 devices"):
        _run(tmp_path, "bad", fsdp=3)


@pytest.mark.slow
def test_k_micro_batches_equal_one_k_times_batch(tmp_path):
    # No batch norm: its statistics are per micro-batch, so only a per-example model can
    # match exactly.
    whole, losses = _run(tmp_path, "whole", batch_size=16, task_kwargs=dict(norm=False))
    accum, accum_losses = _run(tmp_path, "accum", batch_size=16, grad_accum_steps=2,
                               task_kwargs=dict(norm=False))
    np.testing.assert_allclose(accum_losses, losses, rtol=1e-5)
    _assert_same(accum.state.params, whole.state.params, 1e-5)
    # And with FSDP at once.
    both, both_losses = _run(tmp_path, "both", batch_size=16, grad_accum_steps=2, fsdp=4,
                             task_kwargs=dict(norm=False))
    np.testing.assert_allclose(both_losses, losses, rtol=1e-5)
    _assert_same(both.state.params, whole.state.params, 1e-5)


def test_micro_batches_that_do_not_split_over_the_devices_are_named(tmp_path):
    with pytest.raises(ValueError, match="grad_accum_steps=2: the global batch of 8 does not"):
        _run(tmp_path, "bad", batch_size=8, grad_accum_steps=2)
