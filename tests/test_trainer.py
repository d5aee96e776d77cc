"""The shared trainer on a toy task: loss falls, exact resume, NaN stop, init_from, sharding."""

import os
import signal
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from _toy_task import OnFetch, ToyTask, WiderToyTask, toy_config
from _toy_task import toy_config as _config

from vsegjax.core import NonFiniteLossError, checkpoint, train, writers
from vsegjax.data import synthetic

C = len(synthetic.CLASSES)

def test_loss_falls_and_checkpoints_appear(tmp_path):
    result = train(_config(num_steps=30), str(tmp_path), ToyTask(_config()))
    rows = writers.read_jsonl(str(tmp_path / "metrics.jsonl"))
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < 0.6 * losses[0]
    assert "L_seg" in rows[-1] and "grad_norm" in rows[-1]
    # The learning rate of each logged step: cosine from 0.05 over 30 steps (step 30 takes
    # the rate of update 29).
    logged = {r["step"]: r["learning_rate"] for r in rows if "loss" in r}
    for step, lr in logged.items():
        assert lr == pytest.approx(0.05 * 0.5 * (1 + np.cos(np.pi * (step - 1) / 30)), rel=1e-5)
    assert result.step == 30
    steps = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
    assert steps[-1] == 30 and len(steps) <= 2  # keep_checkpoints default 2
    # Parameters live replicated on all 8 (fake) devices.
    leaf = jax.tree.leaves(result.state.params)[0]
    assert len(leaf.sharding.device_set) == jax.device_count() == 8
    assert leaf.sharding.is_fully_replicated


def _ctrl_c():
    raise KeyboardInterrupt


class InterruptedToyTask(ToyTask):
    """Ctrl-C while batch 6 is fetched."""

    def train_iterator(self, seed):
        return OnFetch(super().train_iterator(seed), 6, _ctrl_c)


class InterruptedInEvalToyTask(ToyTask):
    """Ctrl-C after step 5 has run (batch 6 not yet fetched)."""

    def evaluate(self, params, model_state, step):
        if step == 5:
            raise KeyboardInterrupt
        return {}


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint_every,where", [(3, "fetch"), (100, "fetch"),
                                                    (100, "after_step")])
def test_resume_after_interrupt_continues_exactly(tmp_path, checkpoint_every, where):
    straight = train(_config(num_steps=9), str(tmp_path / "a"), ToyTask(_config()))
    cfg = _config(num_steps=9, checkpoint_every=checkpoint_every, eval_every=5)
    task_cls = InterruptedToyTask if where == "fetch" else InterruptedInEvalToyTask
    with pytest.raises(KeyboardInterrupt):
        train(cfg, str(tmp_path / "b"), task_cls(cfg))
    # Interrupted while fetching step 6's batch: step 5 is saved, whatever the schedule.
    assert int(checkpoint.load_state_tree(str(tmp_path / "b"))["step"]) == 5
    resumed = train(cfg, str(tmp_path / "b"), ToyTask(cfg))
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_finished_run_is_not_retrained(tmp_path):
    train(_config(num_steps=3), str(tmp_path), ToyTask(_config()))
    before = (tmp_path / "metrics.jsonl").read_text()
    again = train(_config(num_steps=3), str(tmp_path), ToyTask(_config()))
    assert again.step == 3 and (tmp_path / "metrics.jsonl").read_text() == before


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = _config(num_steps=12)
    cfg.no_shuffle = True
    task = ToyTask(cfg, poison_from=24)  # unshuffled: steps 1-3 fine, step 4 poisoned
    with pytest.raises(NonFiniteLossError, match="step 4.*last good checkpoint is step 3"):
        train(cfg, str(tmp_path), task)
    state = checkpoint.load_state_tree(str(tmp_path))
    assert int(state["step"]) == 3
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state["params"]))


def test_a_bad_step_found_late_is_still_named_and_never_saved(tmp_path):
    # The guard is read only before saving: step 4 goes bad, the check at step 12 names it.
    cfg = _config(num_steps=12, checkpoint_every=100, check_finite_every=100)
    cfg.no_shuffle = True
    with pytest.raises(NonFiniteLossError, match="at step 4: .*No good checkpoint was saved"):
        train(cfg, str(tmp_path), ToyTask(cfg, poison_from=24))
    assert not list((tmp_path / "checkpoints").glob("[0-9]*"))


@pytest.mark.slow
def test_init_from_copies_parameters(tmp_path):
    first = train(_config(num_steps=6), str(tmp_path / "first"), ToyTask(_config()))
    cfg = _config(num_steps=1, init_from=str(tmp_path / "first"))
    cfg.optimizer.learning_rate = 0.0
    second = train(cfg, str(tmp_path / "second"), ToyTask(cfg))
    for a, b in zip(jax.tree.leaves(first.state.params), jax.tree.leaves(second.state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b))


def test_frozen_group_does_not_move(tmp_path):
    cfg = _config(num_steps=5)
    cfg.optimizer.frozen = ("Conv_0",)
    init = ToyTask(cfg).init_variables(jax.random.split(jax.random.PRNGKey(0))[0])
    result = train(cfg, str(tmp_path), ToyTask(cfg))
    np.testing.assert_array_equal(np.asarray(result.state.params["Conv_0"]["kernel"]),
                                  np.asarray(init["params"]["Conv_0"]["kernel"]))
    assert not np.allclose(np.asarray(result.state.params["Dense_0"]["kernel"]),
                           np.asarray(init["params"]["Dense_0"]["kernel"]))


def test_bad_optimizer_field_is_named(tmp_path):
    cfg = _config()
    cfg.optimizer.name = "adagrad_typo"
    with pytest.raises(ValueError, match="optimizer.name"):
        train(cfg, str(tmp_path), ToyTask(cfg))


@pytest.mark.slow
def test_killed_run_restarts_to_the_same_parameters(tmp_path):
    """SIGKILL after a checkpoint (no chance to save), restart, compare with no kill."""
    cfg = _config(num_steps=9, checkpoint_every=3, async_checkpoints=True)
    straight = train(cfg, str(tmp_path / "a"), ToyTask(cfg))
    script = os.path.join(os.path.dirname(__file__), "_kill_run.py")
    proc = subprocess.run([sys.executable, script, str(tmp_path / "b"), "8"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]  # killed while fetching step 8's batch
    saved = checkpoint.load_state_tree(str(tmp_path / "b"))
    assert int(saved["step"]) in (3, 6)
    resumed = train(cfg, str(tmp_path / "b"), ToyTask(cfg))
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_one_and_eight_devices_give_the_same_training(tmp_path):
    assert jax.device_count() == 8
    results = {}
    for n in (1, 8):
        cfg = _config(num_steps=4, log_every=1)
        cfg.mesh = ml_collections.ConfigDict(dict(num_devices=n))
        results[n] = train(cfg, str(tmp_path / str(n)), ToyTask(cfg))
        rows = writers.read_jsonl(str(tmp_path / str(n) / "metrics.jsonl"))
        results[n] = ([r["loss"] for r in rows if "loss" in r], results[n].state.params)
    np.testing.assert_allclose(results[1][0], results[8][0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(results[1][1]), jax.tree.leaves(results[8][1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_init_from_a_different_model_is_an_error(tmp_path):
    train(_config(num_steps=2), str(tmp_path / "first"), ToyTask(_config()))
    cfg = _config(num_steps=1, init_from=str(tmp_path / "first"))

    with pytest.raises(ValueError, match=r"init_from .*: parameter params/Dense_0/kernel has "
                                         r"shape \(8, 3\) in the checkpoint, this config expects "
                                         r"\(8, 4\)"):
        train(cfg, str(tmp_path / "second"), WiderToyTask(cfg))


# 2. A loss that explodes without becoming NaN was not stopped, and rotation deleted the
# last good checkpoint.
@pytest.mark.slow
def test_a_diverging_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = toy_config(num_steps=12, checkpoint_every=1, keep_checkpoints=1)
    cfg.no_shuffle = True  # steps 1-3 fine; from step 4 the inputs are x 1e4 (finite;
    # no batch norm to absorb it)
    with pytest.raises(NonFiniteLossError,
                       match=r"diverging loss at step 4: .* above 100 x .*last good "
                             r"checkpoint is step 2 .*Step 3 holds the state that went bad"):
        train(cfg, str(tmp_path), ToyTask(cfg, poison_from=24, poison_value=1e4, norm=False))
    assert checkpoint.Checkpointer(str(tmp_path / "checkpoints")).all_steps() == [2, 3]
    # Rotation still keeps keep_checkpoints good ones on a healthy run; factor 0 turns the
    # rule off (the same run then trains to the end).
    cfg = toy_config(num_steps=12, checkpoint_every=1, keep_checkpoints=1)
    cfg.no_shuffle = True
    cfg.train.divergence = dict(factor=0.0)
    train(cfg, str(tmp_path / "off"), ToyTask(cfg, poison_from=24, poison_value=1e4, norm=False))
    assert checkpoint.Checkpointer(str(tmp_path / "off" / "checkpoints")).all_steps() == [11, 12]
    cfg.train.divergence = dict(factor=0.5)
    with pytest.raises(ValueError, match="train.divergence: factor must be 0"):
        train(cfg, str(tmp_path / "bad"), ToyTask(cfg))


# 7a. With learning_rate=1e39 step 1's parameters were all inf and saved as "the last good
# checkpoint": the guard checked only the loss and the gradient.
@pytest.mark.slow
def test_non_finite_parameters_after_an_update_are_never_saved(tmp_path):
    cfg = toy_config(num_steps=4, checkpoint_every=1)
    cfg.optimizer.learning_rate = 1e39
    cfg.optimizer.schedule = "constant"
    with pytest.raises(NonFiniteLossError, match="non-finite parameters after the update at "
                                                 "step 1: .*No good checkpoint was saved"):
        train(cfg, str(tmp_path), ToyTask(cfg))
    assert not list((tmp_path / "checkpoints").glob("[0-9]*"))


# 7b. Ctrl-C landing just after the step call (which donates the old state) lost the
# state: "nothing saved beyond step None".
@pytest.mark.slow
def test_ctrl_c_just_after_a_step_call_still_saves_that_step(tmp_path, monkeypatch):
    real_jit = jax.jit
    calls = {"n": 0}

    def jit(fun, **kwargs):
        compiled = real_jit(fun, **kwargs)
        if getattr(fun, "__name__", "") != "train_step":
            return compiled

        def call(*args):
            out = compiled(*args)
            calls["n"] += 1
            if calls["n"] == 5:  # the signal arrives before the result is bound
                os.kill(os.getpid(), signal.SIGINT)
            return out
        return call

    monkeypatch.setattr(jax, "jit", jit)
    cfg = toy_config(num_steps=9, checkpoint_every=100)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, str(tmp_path), ToyTask(cfg))
    assert checkpoint.Checkpointer(str(tmp_path / "checkpoints")).all_steps() == [5]
    # The handler is put back: Ctrl-C outside training is Python's own again.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
