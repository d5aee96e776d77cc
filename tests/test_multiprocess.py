"""Several real processes on localhost (jax.distributed over gloo) train as one would.

Each process is ``python -m vsegjax.main`` with 2 CPU devices; they meet at a free port.
The reference is one process with 4 devices and the same global batch.
"""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from vsegjax.data import synthetic_tfds
from vsegjax.core import checkpoint
from vsegjax.core import distributed
from vsegjax.core import sharding
from vsegjax.core import writers
ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 6
EVAL = (f"--config.train.eval_every={STEPS}",)  # the training-time evaluation, sharded


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    synthetic_tfds.build(str(data_dir), "tiny", num_workers=1)
    return data_dir


def main_command(data_dir, workdir, *extra):
    return [sys.executable, "-m", "vsegjax.main", "--config=configs/static_synthetic.py",
            "--config.data.config=tiny", f"--config.data.data_dir={data_dir}",
            f"--config.train.num_steps={STEPS}", "--config.eval.num_snippets=4",
            f"--workdir={workdir}", *extra]


def env_with_devices(n: int) -> dict:
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")


def run_processes(data_dir, workdir, num_processes=2, devices_each=2, timeout=600, extra=()):
    port = free_port()
    procs = [subprocess.Popen(
        main_command(data_dir, workdir, f"--coordinator_address=127.0.0.1:{port}",
                     f"--num_processes={num_processes}", f"--process_id={i}", *extra),
        cwd=ROOT, env=env_with_devices(devices_each), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for i in range(num_processes)]
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i}:\n{out[-3000:]}"
    return outs


@pytest.fixture(scope="module")
def two_process_run(tiny_data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("two")
    outs = run_processes(tiny_data, workdir, extra=EVAL)
    return workdir, outs


@pytest.mark.slow
def test_two_processes_end_with_the_parameters_of_one_with_four_devices(
        tiny_data, two_process_run, tmp_path):
    workdir, outs = two_process_run
    one = subprocess.run(main_command(tiny_data, tmp_path / "one", *EVAL), cwd=ROOT,
                         env=env_with_devices(4), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    a = checkpoint.load_state_tree(str(workdir / "static"))
    b = checkpoint.load_state_tree(str(tmp_path / "one" / "static"))
    assert int(a["step"]) == int(b["step"]) == STEPS
    diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) - y))),
                         a["params"], b["params"])
    assert max(jax.tree.leaves(diffs)) < 1e-5
    # The logged losses agree too (the same global batches reached the same model).
    last = [[r for r in writers.read_jsonl(str(w / "static" / "metrics.jsonl")) if "loss" in r][-1]
            for w in (workdir, tmp_path / "one")]
    assert last[0]["step"] == last[1]["step"] == STEPS
    assert abs(last[0]["loss"] - last[1]["loss"]) < 1e-5
    # Each process evaluated its rows of each global batch; the sums cover all of them.
    evals = [[r for r in writers.read_jsonl(str(w / "static" / "metrics.jsonl"))
              if "eval/miou" in r] for w in (workdir, tmp_path / "one")]
    assert [r["step"] for r in evals[0]] == [r["step"] for r in evals[1]] == [STEPS]
    assert abs(evals[0][0]["eval/miou"] - evals[1][0]["eval/miou"]) < 1e-6
    # The final report too: each process took half the snippets, the counts were pooled.
    reports = [json.loads((w / "eval_metrics.json").read_text())
               for w in (workdir, tmp_path / "one")]
    assert reports[0]["snippets_per_process"] == [2, 2]
    assert reports[1]["snippets_per_process"] == [4]
    for method in ("static", "positional_prior"):
        assert abs(reports[0][method]["miou"] - reports[1][method]["miou"]) < 1e-6
        assert reports[0][method]["per_class_iou"].keys() == reports[1][method][
            "per_class_iou"].keys()


_POOL_PROBE = """
import sys, numpy as np
from vsegjax.core import distributed
port, pid = sys.argv[1], int(sys.argv[2])
distributed.initialize(distributed.ProcessFlags(f"127.0.0.1:{port}", 2, pid, 60))
from vsegjax import evaluation
from vsegjax.evaluation import pooling
big = np.asarray([3 * 2**40 + pid, 7], np.int64)  # beyond int32, as a pod's pixel counts
pooled = pooling.sum_over_processes({"x": big, "f": np.asarray([0.1 + pid, 1e-12])})
print("sum", pooled["x"].tolist(), pooled["f"].tolist())
print("per", pooling.per_process(pid + 2))
cms = evaluation.ConfusionMatrices(3)
keys = ["a", ("T", 1)] if pid == 0 else [("T", 1), "a"]  # inserted in another order
for i, k in enumerate(keys):
    cms.add(k, np.full(4, pid), np.full(4, i))
pooled = cms.pooled()
print("cm", [pooled.cms["a"].tolist(), pooled.cms[("T", 1)].tolist()])
import jax
from jax.sharding import NamedSharding, PartitionSpec
from vsegjax.core import sharding
mesh = sharding.make_mesh()  # 2 devices per process
rows = np.asarray([[100 * pid + 1.0], [100 * pid + 2.0]], np.float32)  # this process' rows
w = sharding.to_mesh(np.float32(3), mesh)  # a host value replicated over the mesh
# A result XLA leaves replicated: rows_from_mesh reshards it and returns this process' rows.
f = jax.jit(lambda w, x: x * w, out_shardings=NamedSharding(mesh, PartitionSpec()))
print("rows", sharding.rows_from_mesh(f(w, sharding.rows_to_mesh(rows, mesh)), mesh).tolist())
"""


def test_counts_are_pooled_over_processes_exactly():
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", _POOL_PROBE, str(port), str(i)],
                              cwd=ROOT, env=env_with_devices(2), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i}:\n{out[-3000:]}"
        lines = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in out.splitlines()
                 if ln.split(" ", 1)[0] in ("sum", "per", "cm", "rows")}
        assert lines["sum"] == f"{[6 * 2**40 + 1, 14]} {[0.1 + 1.1, 2e-12]}"  # float64 kept
        assert lines["per"] == "[2, 3]"
        # Matched by key, not by insertion order: "a" has process 0's (label 0, pred 0)
        # and process 1's (1, 1); ("T", 1) process 0's (1, 0) and process 1's (0, 1).
        assert json.loads(lines["cm"]) == [[[4, 0, 0], [0, 4, 0], [0, 0, 0]],
                                           [[0, 4, 0], [4, 0, 0], [0, 0, 0]]]
        # A report's rows went over all 4 devices of both processes and came back home.
        assert json.loads(lines["rows"]) == [[300.0 * i + 3], [300.0 * i + 6]]


def test_only_process_zero_writes_and_both_finish(two_process_run):
    workdir, outs = two_process_run
    assert (workdir / "eval_metrics.json").is_file()
    rows = writers.read_jsonl(str(workdir / "static" / "metrics.jsonl"))
    assert [r["step"] for r in rows if "loss" in r] == [STEPS]  # one writer, not two
    assert "wrote " in outs[0] and "wrote " not in outs[1]
    # The grain iterator's position is saved per process, the state once, collectively.
    step_dir = workdir / "static" / "checkpoints" / str(STEPS)
    assert sorted(p.name for p in (step_dir / "data").glob("process_*")) == [
        "process_0-of-2.json", "process_1-of-2.json"]


def test_a_two_process_checkpoint_restores_in_one_process_on_eight_devices(two_process_run):
    workdir, _ = two_process_run
    assert jax.device_count() == 8
    saved = checkpoint.load_state_tree(str(workdir / "static"))
    mesh = sharding.make_mesh(8)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype,
                                                           sharding=replicated), saved)
    ckpt = checkpoint.Checkpointer(str(workdir / "static" / "checkpoints"))
    state, _ = ckpt.restore(abstract)
    ckpt.close()
    for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(saved)):
        assert len(x.addressable_shards) == 8
        np.testing.assert_array_equal(np.asarray(x), y)


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_in_one_process_where_it_left_off(
        tiny_data, two_process_run, tmp_path):
    """A pod's run carried on on one machine: grain saved no position for process 0 of 1,
    and the resume failed. The state and the input position carry over, so 6 steps on 2
    processes and 2 more on 1 equal 8 steps on 1 (the warm-up is 50 steps, so the
    learning rate does not depend on num_steps)."""
    workdir, _ = two_process_run
    resumed = tmp_path / "resumed"
    shutil.copytree(workdir, resumed)
    more = (*EVAL, f"--config.train.num_steps={STEPS + 2}")
    runs = {name: subprocess.run(main_command(tiny_data, folder, *more), cwd=ROOT,
                                 env=env_with_devices(4), capture_output=True, text=True,
                                 timeout=600)
            for name, folder in (("resumed", resumed), ("straight", tmp_path / "straight"))}
    for name, result in runs.items():
        assert result.returncode == 0, f"{name}:\n{result.stderr[-3000:]}"
    assert ("written by 2 process(es) (process_0-of-2.json, process_1-of-2.json) and this "
            "run has 1: every writer was at the same input position" in runs["resumed"].stderr)
    a = checkpoint.load_state_tree(str(resumed / "static"))
    b = checkpoint.load_state_tree(str(tmp_path / "straight" / "static"))
    assert int(a["step"]) == int(b["step"]) == STEPS + 2
    diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) - y))),
                         a["params"], b["params"])
    assert max(jax.tree.leaves(diffs)) < 1e-5


def test_bad_process_flags_are_named():
    with pytest.raises(ValueError, match="--process_id=2 is out of range for --num_processes=2"):
        distributed.validate(distributed.ProcessFlags("127.0.0.1:1234", 2, 2))
    with pytest.raises(ValueError, match="missing --process_id"):
        distributed.validate(distributed.ProcessFlags("127.0.0.1:1234", 2, None))
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        distributed.validate(distributed.ProcessFlags("localhost", 2, 0))


def test_a_coordinator_that_never_answers_is_named(tiny_data, tmp_path):
    port = free_port()  # nobody listens there
    result = subprocess.run(
        main_command(tiny_data, tmp_path, f"--coordinator_address=127.0.0.1:{port}",
                     "--num_processes=2", "--process_id=1", "--initialization_timeout=3"),
        cwd=ROOT, env=env_with_devices(2), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"coordinator at 127.0.0.1:{port} did not answer within 3 s" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_process_is_named_by_the_coordinator(tiny_data, tmp_path):
    port = free_port()
    result = subprocess.run(
        main_command(tiny_data, tmp_path, f"--coordinator_address=127.0.0.1:{port}",
                     "--num_processes=3", "--process_id=0", "--initialization_timeout=3"),
        cwd=ROOT, env=env_with_devices(2), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert (f"coordinator 127.0.0.1:{port}: not all --num_processes=3 processes joined"
            in result.stderr)


@pytest.mark.slow
def test_sigterm_stops_both_processes_at_one_step_and_the_run_resumes(tiny_data, tmp_path):
    """Both get SIGTERM (as every worker of a preempted pod does); JAX's preemption sync
    point makes them stop at the same step; the same command run again resumes."""
    import signal
    import time
    port = free_port()
    workdir = tmp_path / "run"
    long_run = ["--config.train.num_steps=5000", "--config.train.log_every=2"]
    procs = [subprocess.Popen(
        main_command(tiny_data, workdir, f"--coordinator_address=127.0.0.1:{port}",
                     "--num_processes=2", f"--process_id={i}", *long_run),
        cwd=ROOT, env=env_with_devices(2), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for i in range(2)]
    metrics = workdir / "static" / "metrics.jsonl"
    deadline = time.time() + 400
    # A logged step (the hparams row also names config fields such as loss.*).
    while not (metrics.is_file() and '"loss":' in metrics.read_text()):
        assert all(p.poll() is None for p in procs) and time.time() < deadline
        time.sleep(0.5)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i}:\n{out[-3000:]}"
    step = int(checkpoint.load_state_tree(str(workdir / "static"))["step"])
    assert 2 <= step < 5000
    for out in outs:  # both name the same step
        assert f"preempted (SIGTERM): saved step {step} to" in out
    outs = run_processes(tiny_data, workdir, extra=(f"--config.train.num_steps={step + 2}",))
    assert all(f"resumed from {workdir / 'static' / 'checkpoints'} at step {step}" in out
               for out in outs)
    assert int(checkpoint.load_state_tree(str(workdir / "static"))["step"]) == step + 2
    rows = [r for r in writers.read_jsonl(str(metrics)) if "loss" in r]
    assert rows[-1]["step"] == step + 2
