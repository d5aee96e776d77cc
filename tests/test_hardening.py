"""Nothing of the user's lost, every bad input one clear line (the hardening issue).

One test per item found by trying the commands as a new user would; each failed on the
code before its fix."""

import ast
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _toy_task import ToyTask, WiderToyTask, toy_config
from vsegjax import autolabel
from vsegjax.data import frame_sources, image_decode, synthetic, video_datasets
from vsegjax.data.snippet_builder import BadExample, read_frame
from vsegjax.models.flownet import FlowNetS, init_flownet
from vsegjax.models.flownet_checkpoint import load_flownet_variables
from vsegjax.core import NonFiniteLossError, train
from vsegjax.core import checkpoint
from vsegjax import experiments
C = len(synthetic.CLASSES)
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _digest(folder: pathlib.Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode() + (p.read_bytes() if p.is_file() else b""))
    return h.hexdigest()


@pytest.fixture
def clip(tmp_path):
    """clip/frames (6 frames 32x48) and clip/labels (frames 0 and 5, palette-free ids)."""
    ex = synthetic.generate_snippet(synthetic.SyntheticConfig(height=32, width=48,
                                                              num_frames=6, seed=3), "train", 0)
    root = tmp_path / "clip"
    (root / "frames").mkdir(parents=True)
    (root / "labels").mkdir()
    for t, f in enumerate(ex["frames"]):
        cv2.imwrite(str(root / "frames" / f"{t:05d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    for t in (0, 5):
        cv2.imwrite(str(root / "labels" / f"{t:05d}.png"), ex["labels"][t])
    return root


def _run(root, out, method="copy", **flags):
    argv = [f"--frames={root / 'frames'}", f"--labels={root / 'labels'}", f"--out={out}",
            f"--method={method}", f"--num_classes={C}", "--max_side=0",
            *(f"--{k}={v}" for k, v in flags.items())]
    return autolabel.main(argv)


# 1. autolabel --out=clip with clip/labels as --labels rewrote the user's labels.
def test_autolabel_refuses_an_out_whose_labels_folder_is_the_input(clip, capsys):
    before = _digest(clip)
    assert _run(clip, clip) == 2
    err = capsys.readouterr().err
    assert "writes" in err and "labels" in err and "--labels folder" in err
    assert err.count("\n") == 1
    assert _digest(clip) == before
    # An output folder that holds an input is refused too (overlay/ holding --frames).
    nested = clip.parent / "nested"
    (nested / "overlay").mkdir(parents=True)
    os.rename(clip / "frames", nested / "overlay" / "frames")
    with pytest.raises(autolabel.AutolabelError, match="holds the --frames folder"):
        autolabel.autolabel(str(nested / "overlay" / "frames"), str(clip / "labels"),
                            str(nested), "copy", C)
    # --out holding the inputs, with other output folders, is fine.
    os.rename(nested / "overlay" / "frames", clip / "frames")
    fine = clip.parent / "work"
    (fine / "src").mkdir(parents=True)
    os.rename(clip / "labels", fine / "src" / "labels")
    os.rename(clip / "frames", fine / "src" / "frames")
    assert autolabel.main([f"--frames={fine / 'src' / 'frames'}",
                           f"--labels={fine / 'src' / 'labels'}", f"--out={fine}",
                           "--method=copy", f"--num_classes={C}"]) == 0
    assert len(list((fine / "labels").iterdir())) == 6


# 4. Two frames with one stem overwrote each other's outputs; a '..' stem was skipped.
def test_frames_sharing_a_stem_are_refused_naming_both(clip, tmp_path, capsys):
    frame = cv2.imread(str(clip / "frames" / "00001.png"))
    cv2.imwrite(str(clip / "frames" / "00001.jpg"), frame)
    assert _run(clip, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "00001.jpg" in err and "00001.png" in err and "same stem" in err
    assert not (tmp_path / "out").exists()
    (clip / "frames" / "00001.jpg").unlink()
    cv2.imwrite(str(clip / "frames" / "...png"), frame)
    with pytest.raises(FileNotFoundError, match=r"\.\.\.png has the file stem '\.\.'"):
        frame_sources.list_images(clip / "frames", "--frames")
    assert _run(clip, tmp_path / "out") == 2
    assert "'..'" in capsys.readouterr().err


# 6. A JPEG damaged in the middle (end marker intact) was used as a half-grey frame; only
# libjpeg's "Corrupt JPEG data" on stderr said so.
def _damaged_jpeg_clip(clip) -> pathlib.Path:
    for png in sorted((clip / "frames").glob("*.png")):
        frame = cv2.resize(cv2.imread(str(png)), (160, 96))  # enough entropy-coded data
        cv2.imwrite(str(png.with_suffix(".jpg")), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
        png.unlink()
    bad = clip / "frames" / "00002.jpg"
    data = bytearray(bad.read_bytes())
    middle = len(data) // 2
    data[middle:middle + len(data) // 4] = bytes(len(data) // 4)
    assert data[-2:] == b"\xff\xd9"
    bad.write_bytes(bytes(data))
    return bad


def test_a_jpeg_the_decoder_calls_corrupt_is_named(clip, tmp_path, capfd):
    bad = _damaged_jpeg_clip(clip)
    assert cv2.imread(str(bad)) is not None  # OpenCV alone hands back a picture
    with pytest.raises(BadExample, match=rf"{re.escape(str(bad))}: the JPEG decoder reports "
                                         rf"damaged data \(Corrupt JPEG data"):
        read_frame(bad)
    read_frame(clip / "frames" / "00001.jpg")  # the intact ones decode as before
    capfd.readouterr()
    assert _run(clip, tmp_path / "out") == 2
    err = capfd.readouterr().err
    assert str(bad) in err and "damaged data" in err and err.count("\n") == 1
    # A dataset build skips it with --skip_bad and lists it, as it does a truncated file.
    cfg = video_datasets.user_video_config(clip / "frames", num_classes=C, frames_before=1,
                                           frames_after=1, skip_bad=True)
    builder = video_datasets.build("user_video", str(tmp_path / "tfds"), cfg)
    files = {f for e in builder.skipped["full"] for f in e["files"]}
    assert files == {str(bad)}


def test_output_on_stderr_during_a_jpeg_decode_is_passed_on(clip, capfd):
    """fd 2 points at a file while libjpeg runs; any line that is not its corruption
    warning goes back to the real stderr."""
    good = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1].tobytes()
    real = cv2.imdecode

    def noisy(buffer, flags):
        os.write(2, b"another thread says hello\n")
        return real(buffer, flags)

    capfd.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(image_decode.cv2, "imdecode", noisy)
        assert image_decode.decode(good, cv2.IMREAD_COLOR, "x.jpg").shape == (16, 16, 3)
    assert capfd.readouterr().err == "another thread says hello\n"


# 7c. A second video's warp_refine with the same --out reused the first video's refiner.
def test_warp_refine_does_not_reuse_a_refiner_of_other_frames(clip, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(clip, out, "warp_refine", train_steps=2, k=2) == 0
    assert (out / "refiner" / "trained_on.json").is_file()
    # The same video again resumes (nothing to train: the last step is saved).
    assert _run(clip, out, "warp_refine", train_steps=2, k=2) == 0
    capsys.readouterr()
    other = tmp_path / "other"
    (other / "frames").mkdir(parents=True)
    (other / "labels").mkdir()
    for p in sorted((clip / "frames").iterdir()):
        image = cv2.imread(str(p))
        cv2.imwrite(str(other / "frames" / p.name), 255 - image)  # another video
    for p in (clip / "labels").iterdir():
        (other / "labels" / p.name).write_bytes(p.read_bytes())
    before = _digest(out / "refiner")
    assert _run(other, out, "warp_refine", train_steps=2, k=2) == 2
    err = capsys.readouterr().err
    assert "trained on other frames or labels" in err and "data_sha256" in err
    assert _digest(out / "refiner") == before
    # Other settings (the flow) are named as such.
    assert _run(clip, out, "warp_refine", train_steps=2, k=2, flow="farneback") == 2
    err = capsys.readouterr().err
    assert "other settings (flow)" in err


# 10. init_from, the FlowNetS flow checkpoint and --refiner restored without a target: a
# received checkpoint decided the array sizes (and init_from read the optimiser state too).
@pytest.fixture
def forbid_reads(monkeypatch):
    """Call it to make reading any array of a checkpoint an error from then on: what is
    raised after that was found from the metadata alone."""
    def forbid():
        monkeypatch.setattr(checkpoint.ocp.PyTreeCheckpointHandler, "restore",
                            lambda *a, **k: pytest.fail("read before the shapes were checked"))
    return forbid


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


def test_a_flownet_checkpoint_is_checked_against_the_config_before_reading(
        tmp_path, forbid_reads):
    small = FlowNetS(width=0.25, num_levels=3, max_displacement=2)
    params = init_flownet(small, jax.random.key(0))["params"]
    saved = checkpoint.Checkpointer(str(tmp_path / "run" / "checkpoints"), async_save=False)
    saved.save(3, {"params": {"flow": params}, "step": jnp.int32(3)})
    saved.close()
    wider = FlowNetS(width=0.5, num_levels=3, max_displacement=2)
    forbid_reads()
    with pytest.raises(ValueError, match=r"flow.checkpoint: .*run for FlowNetS\(width=0.5, "
                                         r"num_levels=3\): parameter params/flow/\S+ has shape "
                                         r"\(.*\) in the checkpoint, this config expects "
                                         r"\(.*\); check flow.width"):
        load_flownet_variables(str(tmp_path / "run"), wider)


def test_a_refiner_is_checked_against_its_config_before_reading(clip, tmp_path, capsys,
                                                                forbid_reads):
    out = tmp_path / "out"
    assert _run(clip, out, "warp_refine", train_steps=1, k=2) == 0
    received = tmp_path / "received"
    shutil.copytree(out / "refiner", received)
    record = json.loads((received / "config.json").read_text())
    width = record["warp_refine"].get("refiner_width", 32)
    record["warp_refine"]["refiner_width"] = width * 2  # a checkpoint that is not its config
    (received / "config.json").write_text(json.dumps(record))
    capsys.readouterr()
    forbid_reads()
    assert _run(clip, tmp_path / "again", "warp_refine", refiner=received) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    found = re.search(rf"--refiner {re.escape(str(received))}: parameter params/refiner/\S+ "
                      rf"has shape (\(.*\)) in the checkpoint, this config expects (\(.*\))$",
                      err.strip())
    assert found, err
    saved, expected = (ast.literal_eval(g) for g in found.groups())
    assert [b // a for a, b in zip(saved, expected) if a != b] == [2]  # the doubled width


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


# 8. --out naming a file failed with NotADirectoryError after the flow was computed;
# an unwritable --out with PermissionError.
def test_bad_out_paths_fail_before_any_work(clip, tmp_path, capsys, monkeypatch):
    def no_flow(*a, **k):
        raise AssertionError("flow computed before --out was checked")
    monkeypatch.setattr(autolabel.prop, "video_flows", no_flow)
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    assert _run(clip, a_file, "flow") == 2
    assert "is an existing file" in capsys.readouterr().err
    assert a_file.read_text() == "keep me"
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            assert _run(clip, locked / "out", "flow") == 2
            assert "permission denied" in capsys.readouterr().err
        finally:
            locked.chmod(0o700)
    # --flow=<not a checkpoint> names the flag, not a config field.
    not_ckpt = tmp_path / "not_a_checkpoint"
    not_ckpt.mkdir()
    assert _run(clip, tmp_path / "o2", "flow", flow=not_ckpt) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --flow={not_ckpt}") and "config field" not in err


# 2. A loss that explodes without becoming NaN was not stopped, and rotation deleted the
# last good checkpoint.
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


# 3. --config.train.num_steps=-5 (or 0) was trained and evaluated with exit 0; other
# numeric fields failed deep in the pipeline.
@pytest.mark.parametrize("field,value,named,allowed", [
    ("train.num_steps", -5, "train.num_steps", "an int >= 1"),
    ("input.batch_size", 0, "input.batch_size", "an int >= 1"),
    ("eval.batch_size", -1, "eval.batch_size", "an int >= 1"),
    ("optimizer.learning_rate", 0.0, "optimizer.learning_rate", "a finite number > 0"),
    ("optimizer.learning_rate", float("nan"), "optimizer.learning_rate", "> 0"),
    ("input.augment.resize", (0, 64), "input.augment.resize", "two ints >= 1"),
    ("grfp.loss_weights.L_fwd", -1.0, "grfp.loss_weights.L_fwd", "a finite number >= 0"),
])
def test_numeric_config_fields_are_checked_before_anything_runs(field, value, named, allowed):
    from configs import grfp_synthetic
    c = grfp_synthetic.get_config()
    block, *rest = field.split(".")
    target = c[block]
    for key in rest[:-1]:
        target = target[key]
    target[rest[-1]] = value
    with pytest.raises(ValueError, match=rf"^config field {re.escape(named)}: .*{re.escape(allowed)}"):
        experiments.resolve_stages(c, "/nonexistent/run")
    # A stage's own override is named where it is set.
    c = grfp_synthetic.get_config()
    c.stages.grfp.train.num_steps = 0
    with pytest.raises(ValueError, match=r"config field stages.grfp.train.num_steps: an int"):
        experiments.resolve_stages(c, "/nonexistent/run")


def _script(*args, timeout=300):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


# 7e. user_video --name=../../x wrote the dataset outside --data_dir; the unknown-field
# error of vsegjax.main was garbled.
def test_user_video_name_is_a_folder_name_and_unknown_fields_read_plainly(clip, tmp_path):
    data_dir = tmp_path / "tfds"
    for name in ("../../x", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="a dataset config name is letters, digits"):
            video_datasets.user_video_config(clip / "frames", name=name)
    assert video_datasets.user_video_config(clip / "frames", name="clip-1.v2").name == "clip-1.v2"
    proc = _script("data_prep/user_video.py", f"--frames={clip / 'frames'}",
                   f"--data_dir={data_dir}", "--name=../../x")
    assert proc.returncode == 1 and "--name='../../x'" in proc.stderr
    assert not data_dir.exists() and not (tmp_path.parent / "x").exists()
    proc = _script("-m", "vsegjax.main", "--config=configs/static_synthetic.py",
                   f"--workdir={tmp_path / 'run'}", "--config.train.num_stepz=3")
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1
    assert last == ("error: unknown config field 'num_stepz' (--config.train.num_stepz). "
                    'Did you mean "num_steps" instead of "num_stepz"? See the config file '
                    "for the fields it defines.")


# 9. data_prep/user_video.py checked its input only after TFDS had started preparing,
# leaving downloads/extracted behind in the data dir.
def test_user_video_checks_its_input_before_touching_the_data_dir(clip, tmp_path):
    data_dir = tmp_path / "tfds"
    proc = _script("data_prep/user_video.py", f"--frames={tmp_path / 'missing'}",
                   f"--data_dir={data_dir}")
    assert proc.returncode == 1 and "frames not found" in proc.stderr
    (clip / "labels" / "00099.png").write_bytes((clip / "labels" / "00000.png").read_bytes())
    proc = _script("data_prep/user_video.py", f"--frames={clip / 'frames'}",
                   f"--labels={clip / 'labels'}", f"--num_classes={C}", f"--data_dir={data_dir}")
    assert proc.returncode == 1 and "no frame '00099'" in proc.stderr
    assert not data_dir.exists()


# 7. A truncated or corrupt latest checkpoint gave a 169-line TensorStore traceback.
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


# 5. vsegjax.main overwrote an existing DIR/config.json unread on resume.
def test_a_resume_keeps_the_runs_config_record(tmp_path):
    from configs import static_synthetic
    from vsegjax.core import run_record
    def config(**train_fields):
        c = static_synthetic.get_config()
        c.data.config = "tiny"
        c.train.num_steps = 2
        c.train.update(train_fields)
        return c

    workdir = str(tmp_path / "run")
    experiments.run(config(), workdir)
    record = tmp_path / "run" / "static" / "config.json"
    original = record.read_text()
    wider = config()
    wider.model.width = 48
    with pytest.raises(ValueError, match=r"stage static: .* holds checkpoints of another "
                                         r"config \(model.width: 32 -> 48\).*--allow_config"):
        experiments.prepare(wider, workdir)
    assert record.read_text() == original
    # More steps are accepted: the original record stays and the change is appended.
    experiments.run(config(num_steps=3), workdir)
    assert record.read_text() == original
    logged = [json.loads(line) for line in
              (tmp_path / "run" / "static" / run_record.CHANGES_FILE).read_text().splitlines()]
    assert logged[-1]["changes"] == {"train.num_steps": [2, 3]} and logged[-1]["kept_original"]
    # Forced: the new config becomes the record, the old values are in the log.
    prepared = experiments.prepare(wider, workdir, allow_config_change=True)
    assert prepared[0][0].config_changes["model.width"] == [32, 48]
