"""Reading checkpoints: checked against the config before any array is read, on any topology."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _toy_task import ToyTask, WiderToyTask, toy_config

from vsegjax.core import checkpoint, train

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_init_from_reads_only_shared_groups_checked_first(tmp_path, monkeypatch,
                                                         forbid_reads):
    first = toy_config(num_steps=2)
    train(first, str(tmp_path / "first"), ToyTask(first))
    cfg = toy_config(num_steps=1, init_from=str(tmp_path / "first"))
    read = []
    real = checkpoint.ocp.PyTreeCheckpointHandler.restore

    def spy(self, directory, args=None):
        read.extend(checkpoint.variables_template(args.item))  # the top-level paths read
        return real(self, directory, args=args)

    monkeypatch.setattr(checkpoint.ocp.PyTreeCheckpointHandler, "restore", spy)
    train(cfg, str(tmp_path / "second"), ToyTask(cfg))
    assert read and {p[0] for p in read} <= {"params", "model_state"}  # no opt_state, rng

    forbid_reads()
    with pytest.raises(ValueError, match=r"train.init_from .*first: parameter params/Dense_0/"
                                         r"kernel has shape \(8, 3\) in the checkpoint, this "
                                         r"config expects \(8, 4\)"):
        train(cfg, str(tmp_path / "third"), WiderToyTask(cfg))


# 7d. init_from, --refiner and --sdc read a checkpoint written on 8 devices in a process
# with one; a run of 2 processes resuming in 1 is tests/test_multiprocess.py's.
def test_a_checkpoint_of_eight_devices_loads_on_one(tmp_path):
    assert jax.device_count() == 8
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    kernel = jax.device_put(jnp.arange(64 * 3, dtype=jnp.float32).reshape(64, 3), rows)
    saved = checkpoint.Checkpointer(str(tmp_path / "run" / "checkpoints"), async_save=False)
    saved.save(5, {"params": {"Dense_0": {"kernel": kernel}}, "model_state": {},
                   "opt_state": {"mu": kernel}, "step": jnp.int32(5)})
    saved.close()
    probe = ("import jax, numpy as np\n"
             "from vsegjax.core import checkpoint\n"
             "assert jax.device_count() == 1\n"
             f"run = {str(tmp_path / 'run')!r}\n"
             "tree = checkpoint.load_state_tree(run)\n"
             "want = {'params': {'Dense_0': {'kernel': jax.ShapeDtypeStruct((64, 3), "
             "np.float32)}}}\n"
             "variables, step = checkpoint.load_variables(run, want, 'init_from')\n"
             "print(step, float(tree['opt_state']['mu'].sum()), "
             "float(variables['params']['Dense_0']['kernel'].sum()))\n")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    total = float(np.arange(64 * 3).sum())
    assert proc.stdout.split() == ["5", str(total), str(total)]


class _Position:
    """An input iterator reduced to its position (what the checkpoint keeps of it)."""

    def __init__(self, next_index=0):
        self.state = {"next_index": next_index}

    def get_state(self):
        return dict(self.state)

    def set_state(self, state):
        self.state = dict(state)


def test_input_positions_of_other_process_counts(tmp_path, caplog):
    """Equal positions of 2 writers carry over to 1 process; differing ones (which cannot
    be mapped) restore the model state and start the input again, saying so."""
    state = {"w": jnp.arange(4.0), "step": jnp.int32(3)}
    ckpt = checkpoint.Checkpointer(str(tmp_path / "ck"), async_save=False)
    ckpt.save(3, state, _Position(7))
    ckpt.close()
    data = tmp_path / "ck" / "3" / "data"
    own = data / "process_0-of-1.json"
    for i in range(2):
        (data / f"process_{i}-of-2.json").write_text(own.read_text())
    own.unlink()
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    for positions, expect, said in (((7, 7), 7, "same input position"),
                                    ((7, 9), 0, "starts again from its beginning")):
        for i, n in enumerate(positions):
            (data / f"process_{i}-of-2.json").write_text(json.dumps({"next_index": n}))
        it = _Position()
        caplog.clear()
        restored, _ = checkpoint.Checkpointer(str(tmp_path / "ck")).restore(target, it)
        assert it.state == {"next_index": expect}
        assert said in caplog.text and "written by 2 process(es)" in caplog.text
        np.testing.assert_array_equal(restored["w"], np.arange(4.0))


# 7. A truncated or corrupt latest checkpoint gave a 169-line TensorStore traceback.
@pytest.mark.slow
def test_an_unreadable_latest_checkpoint_is_one_line_with_the_way_on(tmp_path):
    def config(num_steps):  # a constant rate: 6 steps then 3 more equal 9 straight
        c = toy_config(num_steps=num_steps, checkpoint_every=3)
        c.optimizer.schedule = "constant"
        return c

    cfg = config(6)
    straight = train(config(9), str(tmp_path / "a"), ToyTask(cfg))
    train(cfg, str(tmp_path / "b"), ToyTask(cfg))
    ckpts = tmp_path / "b" / "checkpoints"
    for f in (ckpts / "6" / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 64:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # truncated
    more = config(9)
    with pytest.raises(checkpoint.CheckpointError) as e:
        train(more, str(tmp_path / "b"), ToyTask(more))
    message = str(e.value)
    assert "\n" not in message and "checkpoint step 6 cannot be read" in message
    assert f"mv {ckpts / '6'} {ckpts / '6'}.unreadable" in message
    assert "resume from step 3" in message
    # Doing what it says resumes from step 3 and ends where an unbroken run ends.
    os.rename(ckpts / "6", ckpts / "6.unreadable")
    resumed = train(more, str(tmp_path / "b"), ToyTask(more))
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert (ckpts / "6.unreadable").is_dir()  # nothing of the user's deleted
