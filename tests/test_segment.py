"""vsegjax.segment: a trained run over a video or a folder of frames."""

import importlib
import importlib.util
import json
import pathlib
import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest

from _savedmodel import random_grfp_model
from vsegjax import segment as seg
from vsegjax.data import synthetic, synthetic_tfds
from vsegjax.inference import trained
from vsegjax.core import checkpoint
from vsegjax import experiments
ROOT = pathlib.Path(__file__).resolve().parents[1]
H, W, N = 48, 64, 9


def load_config(name):
    return importlib.import_module(f"configs.{name}").get_config()


def tiny(config, data_dir, steps=2):
    config.data.data_dir = data_dir
    config.data.config = "tiny"  # 48x64 frames
    config.input.batch_size = 8
    config.input.augment.resize = config.input.augment.crop_size = (H, W)
    config.train.update(dict(num_steps=steps, eval_every=0, async_checkpoints=False))
    config.eval.update(dict(num_snippets=2, num_panels=0))
    return config


@pytest.fixture(scope="module")
def static_run(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    synthetic_tfds.build(data_dir, "tiny", num_workers=1)
    run = tmp_path_factory.mktemp("static_run")
    experiments.run(tiny(load_config("static_synthetic"), data_dir), str(run))
    return run


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """N rendered frames (uint8 [N, H, W, 3]), as PNGs in a folder and as an MJPG .avi."""
    frames = synthetic.generate_snippet(
        synthetic.SyntheticConfig(height=H, width=W, num_frames=N, seed=3), "validation", 0
    )["frames"]
    root = tmp_path_factory.mktemp("video")
    (root / "frames").mkdir()
    for k, f in enumerate(frames):
        cv2.imwrite(str(root / "frames" / f"f{k}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer = cv2.VideoWriter(str(root / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 12.0,
                             (W, H))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return root, frames


def count_video_frames(path) -> tuple[int, float]:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.grab():
        n += 1
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return n, fps


@pytest.mark.slow
def test_static_labels_are_the_trained_segmenters_predictions(static_run, video, tmp_path):
    """Frames at the run's size: every label PNG is what the training task's own
    prediction function gives with the checkpoint's parameters (natural frame order)."""
    root, frames = video
    out = tmp_path / "out"
    result = seg.segment(str(static_run), str(root / "frames"), str(out))
    names = sorted(p.name for p in (out / "labels").iterdir())
    assert names == sorted(f"f{k}.png" for k in range(N))
    config = experiments.load_stage_config(str(static_run), "static")
    task = experiments.task_class("static")(config)
    tree = checkpoint.load_state_tree(str(static_run / "static"))
    want = np.asarray(task._predict(tree["params"], tree["model_state"],
                                    frames.astype(np.float32) / 255.0))
    for k in range(N):
        got = cv2.imread(str(out / "labels" / f"f{k}.png"), cv2.IMREAD_UNCHANGED)
        assert got.shape == (H, W) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, want[k])
    assert result["frames"] == N and result["task"] == "static"
    assert result["model_size"] == [H, W] and result["fps_achieved"] > 0
    saved = json.loads((out / "segment.json").read_text())
    assert saved["frames"] == N and saved["class_names"] == list(config.data.class_names)
    assert count_video_frames(out / "overlay.mp4")[0] == N


def test_a_video_gives_one_label_per_frame_at_its_resolution(static_run, video, tmp_path):
    root, _ = video
    out = tmp_path / "out"
    result = seg.segment(str(static_run), str(root / "clip.avi"), str(out), max_frames=7,
                         max_side=32)
    assert result["model_size"] == [24, 32] and result["frames"] == 7
    names = sorted(p.name for p in (out / "labels").iterdir())
    assert names == [f"{k:06d}.png" for k in range(7)]
    for name in names:
        assert cv2.imread(str(out / "labels" / name), cv2.IMREAD_UNCHANGED).shape == (H, W)
    n, fps = count_video_frames(out / "overlay.mp4")
    assert n == 7 and fps == pytest.approx(12.0) and result["fps_input"] == pytest.approx(12.0)
    assert not list(out.glob("*.partial.mp4"))


@pytest.mark.slow
def test_grfp_streaming_equals_the_windowed_model(tmp_path_factory):
    """Frame by frame, carrying h along the flow to the previous frame, gives the
    log-probabilities of the trained video model run on the whole window (its forward
    pass at every frame), from random parameters so the recurrence matters."""
    from vsegjax.methods.grfp.task import GRFPTask
    config = load_config("grfp_synthetic")
    config.model.num_classes = len(config.data.class_names)
    config.input.augment.resize = config.input.augment.crop_size = (H, W)
    config.flow.source = "farneback"
    config.grfp.kernel_size = 3
    config.input.window = (N - 1, 0)
    task = GRFPTask(config)
    variables = dict(task.init_variables(jax.random.PRNGKey(0)))
    params = variables.pop("params")
    # Perturb the cell so the estimate differs from the static one.
    params = jax.tree.map(lambda x: x + 0.1 * np.cos(np.arange(x.size)).reshape(x.shape)
                          if x.ndim == 4 and x.shape[-1] == x.shape[-2] else x, params)
    model = trained.from_state(task, "grfp", params, variables)
    frames = synthetic.generate_snippet(
        synthetic.SyntheticConfig(height=H, width=W, num_frames=N, seed=5), "validation", 1
    )["frames"].astype(np.float32) / 255.0
    run = seg.Segmenter(model, (H, W))
    streamed = np.stack([np.asarray(run.log_probs(f)) for f in frames])
    to_next, to_prev = task.provider.flows(frames[None], need="both")
    out = task.model.apply({"params": params, **variables}, frames[None], to_next, to_prev,
                           N - 1)  # fwbw: seq_logits is the forward pass
    window = np.asarray(out["seq_logits"][0])
    np.testing.assert_allclose(streamed, window, atol=1e-4)
    static = np.asarray(out["static_logits"][0])
    assert np.max(np.abs(streamed[-1] - static)) > 1e-2  # the recurrence changed it


def test_bad_input_is_named_in_one_line(static_run, video, tmp_path, monkeypatch):
    root, _ = video
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(ValueError, match="bad.avi"):
        seg.segment(str(static_run), str(bad), str(tmp_path / "o1"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        seg.segment(str(static_run), str(tmp_path / "empty"), str(tmp_path / "o2"))
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    (untrained / "config.json").write_text((static_run / "static" / "config.json").read_text())
    # A stage's folder alone says what it is only with its stage.json (the runner's).
    with pytest.raises(FileNotFoundError, match="without its stage.json"):
        seg.segment(str(untrained), str(root / "clip.avi"), str(tmp_path / "o3"))
    (untrained / "stage.json").write_text((static_run / "static" / "stage.json").read_text())
    opened = []

    def open_and_note(*args):
        opened.append(open_frames(*args))
        return opened[-1]

    open_frames = seg.open_frames
    monkeypatch.setattr(seg, "open_frames", open_and_note)
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        seg.segment(str(untrained), str(root / "clip.avi"), str(tmp_path / "o3"))
    monkeypatch.undo()
    # Bug: a model that failed to load left the video's capture open.
    assert opened[0]._cap is None
    with pytest.raises(ValueError, match="inside the input folder"):
        seg.segment(str(static_run), str(root / "frames"), str(root / "frames" / "out"))
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="not empty.*--overwrite"):
        seg.segment(str(static_run), str(root / "frames"), str(full))
    seg.segment(str(static_run), str(root / "frames"), str(full), overwrite=True, max_frames=2)
    assert (full / "mine.txt").read_text() == "keep" and len(list((full / "labels").iterdir())) == 2
    # The command prints one line naming the fault and exits 1.
    cli = subprocess.run([sys.executable, "-m", "vsegjax.segment", f"--workdir={static_run}",
                          f"--input={bad}", f"--out={tmp_path / 'o4'}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 1
    assert cli.stderr.strip().count("\n") == 0 and "bad.avi" in cli.stderr


# --------------------------------------------------------------------------- export


def test_stablehlo_export_runs_without_vsegjax_and_matches(static_run, video, tmp_path):
    """model.jax_exported, reloaded with jax.export alone, gives the live model's logits
    (< 1e-4, argmax identical) for any batch size, and the labels of vsegjax.segment."""
    from vsegjax import export
    root, frames = video
    written = export.export(str(static_run), "stablehlo", str(tmp_path / "exp"))
    assert sorted(p.name for p in written) == ["model.jax_exported", "signature.json"]
    exp = jax.export.deserialize(bytearray((tmp_path / "exp" / "model.jax_exported").read_bytes()))
    sig = json.loads((tmp_path / "exp" / "signature.json").read_text())
    assert sig["inputs"]["frames"]["shape"] == ["B", H, W, 3] and sig["num_classes"] == 10
    assert len(sig["palette"]) == 10 and sig["class_names"][0]
    model = trained.load(str(static_run))
    x = frames.astype(np.float32) / 255.0
    for batch in (x[:2], x[:5]):  # the batch is symbolic
        got = np.asarray(exp.call(batch))
        want = np.asarray(model.frame_logits(model.variables, batch))
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
        np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
    seg.segment(str(static_run), str(root / "frames"), str(tmp_path / "seg"))
    labels = np.stack([cv2.imread(str(tmp_path / "seg" / "labels" / f"f{k}.png"),
                                  cv2.IMREAD_UNCHANGED) for k in range(N)])
    agree = float(np.mean(np.asarray(exp.call(x)).argmax(-1) == labels))
    assert agree >= 0.995, agree
    with pytest.raises(ValueError, match="already holds an export"):
        export.export(str(static_run), "stablehlo", str(tmp_path / "exp"))
    with pytest.raises(ValueError, match="--format=tflite: choose from"):
        export.export(str(static_run), "tflite", str(tmp_path / "exp2"))
    with pytest.raises(ValueError, match="--format=onnx: not available: jax2onnx"):
        export.export(str(static_run), "onnx", str(tmp_path / "exp2"))


def test_savedmodel_without_tensorflow_says_how_to_get_it(static_run, tmp_path, monkeypatch):
    from vsegjax import export
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow fails
    monkeypatch.delitem(sys.modules, "vsegjax.inference.savedmodel", raising=False)
    with pytest.raises(ValueError, match=r"--format=savedmodel needs TensorFlow .*"
                                         r"pip install 'vsegjax\[export\]'"):
        export.export(str(static_run), "savedmodel", str(tmp_path / "sm"))
    assert not (tmp_path / "sm").exists()


needs_tf = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="TensorFlow is not installed (pip install -e '.[test,export]'); "
           "--format=savedmodel needs it")


def serve_savedmodel(model_dir, signature, inputs, tmp_path):
    """Runs ``signature`` of the SavedModel on each dict of inputs, in a process where
    TensorFlow runs and jax/vsegjax cannot be imported."""
    paths = []
    for k, arrays in enumerate(inputs):
        paths.append(tmp_path / f"in{k}.npz")
        np.savez(paths[-1], **arrays)
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "_savedmodel.py"), "serve",
                          str(model_dir), signature, *map(str, paths)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return [dict(np.load(p.with_suffix(".out.npz"))) for p in paths]


@needs_tf
def test_savedmodel_served_by_tensorflow_alone_matches(static_run, video, tmp_path):
    """--format=savedmodel: TensorFlow without JAX or vsegjax serves the live model's
    logits (< 1e-4, labels = their argmax) for any batch size."""
    _, frames = video
    cli = subprocess.run([sys.executable, "-m", "vsegjax.export", f"--workdir={static_run}",
                          "--format=savedmodel", f"--out={tmp_path / 'sm'}",
                          "--platforms=cpu"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert cli.returncode == 0, cli.stderr[-3000:]
    sig = json.loads((tmp_path / "sm" / "assets.extra" / "signature.json").read_text())
    assert sig["format"] == "savedmodel" and sig["inputs"]["frames"]["shape"] == ["B", H, W, 3]
    model = trained.load(str(static_run))
    x = frames.astype(np.float32) / 255.0
    batches = [x[:2], x[:5]]
    served = serve_savedmodel(tmp_path / "sm", "serving_default",
                              [{"frames": b} for b in batches], tmp_path)
    for batch, got in zip(batches, served):
        want = np.asarray(model.frame_logits(model.variables, batch))
        np.testing.assert_allclose(got["logits"], want, atol=1e-4, rtol=1e-4)
        np.testing.assert_array_equal(got["labels"], want.argmax(-1))


@needs_tf
def test_savedmodel_stgru_step_matches_the_live_step(tmp_path):
    """A GRFP SavedModel's stgru_step signature is the live STGRU step (< 1e-4)."""
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "_savedmodel.py"),
                          "export-grfp", str(tmp_path / "sm")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    task, model = random_grfp_model((H, W))
    frames = synthetic.generate_snippet(
        synthetic.SyntheticConfig(height=H, width=W, num_frames=2, label_index=1, seed=2),
        "validation", 0
    )["frames"].astype(np.float32) / 255.0
    prev, cur = frames[:1], frames[1:]
    h_prev = np.asarray(jax.nn.softmax(model.frame_logits(model.variables, prev), -1))
    logits = np.asarray(model.frame_logits(model.variables, cur))
    _, to_prev = task.provider.flows(frames[None], need="bwd")
    flow = np.asarray(to_prev)[:, 0]
    inputs = dict(h_prev=h_prev, logits=logits, frame=cur, prev_frame=prev, flow=flow)
    (got,) = serve_savedmodel(tmp_path / "sm", "stgru_step", [inputs], tmp_path)
    want_h, want_logp = model.stgru_step(model.stgru, h_prev, logits, cur, prev, flow)
    np.testing.assert_allclose(got["h"], np.asarray(want_h), atol=1e-4)
    np.testing.assert_allclose(got["log_probs"], np.asarray(want_logp), atol=1e-4)
    sig = json.loads((tmp_path / "sm" / "assets.extra" / "stgru_step.signature.json")
                     .read_text())
    assert list(sig["inputs"]) == list(inputs)


@pytest.mark.slow
def test_exported_stgru_step_streams_like_vsegjax_segment(tmp_path):
    """The exported frame model + STGRU step, driven frame by frame as a server would,
    give Segmenter's GRFP log-probabilities (< 1e-4)."""
    from vsegjax import export
    task, model = random_grfp_model((H, W))
    export.export_stablehlo(model, tmp_path)
    frame_fn, step_fn = (jax.export.deserialize(bytearray((tmp_path / f"{n}.jax_exported")
                                                          .read_bytes()))
                         for n in ("model", "stgru_step"))
    frames = synthetic.generate_snippet(
        synthetic.SyntheticConfig(height=H, width=W, num_frames=6, seed=2), "validation", 0
    )["frames"].astype(np.float32) / 255.0
    run = seg.Segmenter(model, (H, W))
    want = [np.asarray(run.log_probs(f)) for f in frames]
    logits = frame_fn.call(frames[:1])
    h = jax.nn.softmax(logits, -1)
    got = [np.asarray(jax.nn.log_softmax(logits, -1))[0]]
    for t in range(1, len(frames)):
        _, to_prev = task.provider.flows(frames[None, t - 1:t + 1], need="bwd")
        h, logp = step_fn.call(h, frame_fn.call(frames[t:t + 1]), frames[t:t + 1],
                               frames[t - 1:t], np.asarray(to_prev)[:, 0])
        got.append(np.asarray(logp)[0])
    np.testing.assert_allclose(np.stack(got), np.stack(want), atol=1e-4)
    sig = json.loads((tmp_path / "stgru_step.signature.json").read_text())
    assert list(sig["inputs"]) == ["h_prev", "logits", "frame", "prev_frame", "flow"]
