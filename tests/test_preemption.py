"""SIGTERM (a TPU preemption, ``kill``) saves the step in progress and exits cleanly.

In one process the trainer's own handler is tested bit for bit against a run that was not
stopped; ``vsegjax.main`` is tested end to end (exit 0, the step named and saved). The
several-process case is in ``test_multiprocess.py``.
"""

import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from _toy_task import OnFetch, ToyTask, send_signal, toy_config
from vsegjax.data import synthetic_tfds
from vsegjax.core import train
from vsegjax.core import checkpoint
from vsegjax.core import writers
from vsegjax.core.preemption import Preempted

ROOT = pathlib.Path(__file__).resolve().parents[1]


class TerminatedToyTask(ToyTask):
    """SIGTERM while batch 5 is fetched."""

    def train_iterator(self, seed):
        return OnFetch(super().train_iterator(seed), 5, send_signal(signal.SIGTERM))


@pytest.mark.slow
def test_sigterm_saves_the_step_in_progress_and_resumes_bit_identically(tmp_path):
    cfg = toy_config(num_steps=9, checkpoint_every=100)
    straight = train(cfg, str(tmp_path / "a"), ToyTask(cfg))
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted, match="saved step 5 to .*run the same command again"):
        train(cfg, str(tmp_path / "b"), TerminatedToyTask(cfg))
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
    # The signal came while batch 5 was fetched: step 5 was finished, then saved.
    assert checkpoint.Checkpointer(str(tmp_path / "b" / "checkpoints")).all_steps() == [5]
    resumed = train(cfg, str(tmp_path / "b"), ToyTask(cfg))
    assert resumed.step == 9
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_main_exits_zero_on_sigterm_with_the_step_saved(tmp_path):
    data_dir = tmp_path / "tfds"
    synthetic_tfds.build(str(data_dir), "tiny", num_workers=1)
    workdir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vsegjax.main", "--config=configs/static_synthetic.py",
         "--config.data.config=tiny", f"--config.data.data_dir={data_dir}",
         "--config.train.num_steps=5000", "--config.train.log_every=2",
         f"--workdir={workdir}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = workdir / "static" / "metrics.jsonl"
    deadline = time.time() + 300
    # A logged step (the hparams row also names config fields such as loss.*).
    while not (metrics.is_file() and '"loss":' in metrics.read_text()):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-3000:]
    saved = checkpoint.Checkpointer(str(workdir / "static" / "checkpoints")).all_steps()
    step = saved[-1]
    assert 2 <= step < 5000
    assert f"preempted (SIGTERM): saved step {step} to" in out
    assert int(checkpoint.load_state_tree(str(workdir / "static"))["step"]) == step
    logged = [r["step"] for r in writers.read_jsonl(str(metrics)) if "loss" in r]
    assert logged and logged[-1] <= step
