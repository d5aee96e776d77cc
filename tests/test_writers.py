"""Metric writers without TensorFlow, and a run's files on a bucket (``gs://``)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests._fake_bucket import fake_bucket
from vsegjax import files
from vsegjax.core import events
from vsegjax.core import writers
def _read(logdir: str) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(logdir, size_guidance={
        event_accumulator.IMAGES: 0, event_accumulator.SCALARS: 0,
        event_accumulator.TENSORS: 0})
    acc.Reload()
    return acc


def test_tensorboard_reads_what_the_event_writer_wrote(tmp_path):
    w = events.EventFileWriter(str(tmp_path))
    w.write_hparams({"optimizer.learning_rate": 0.01, "model.name": "psp", "remat": True,
                     "data.size": (8, 12)})
    for step in (1, 2, 3):
        w.write_scalars(step, {"loss": 1.0 / step, "miou": np.float32(0.25 * step)})
    picture = np.zeros((5, 7, 3), np.uint8)
    picture[1, 2] = (255, 0, 0)
    w.write_images(3, {"panel": picture})
    w.write_texts(3, {"note": "hello"})
    w.close()

    acc = _read(str(tmp_path))
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(1, 1.0), (2, 0.5),
                                                                (3, pytest.approx(1 / 3))]
    assert [e.value for e in acc.Scalars("miou")] == [0.25, 0.5, 0.75]
    (image,) = acc.Images("panel")
    import cv2
    decoded = cv2.imdecode(np.frombuffer(image.encoded_image_string, np.uint8),
                           cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(decoded, picture)  # PNG is lossless, RGB kept
    (text,) = acc.Tensors("note")
    assert text.tensor_proto.string_val == [b"hello"]
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hp = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hp["optimizer.learning_rate"].number_value == 0.01
    assert hp["model.name"].string_value == "psp" and hp["remat"].bool_value
    assert hp["data.size"].string_value == "[8, 12]"


def test_bad_images_are_named():
    w = events.EventFileWriter("/nonexistent-never-written")
    with pytest.raises(ValueError, match=r"\[H, W, 3\]; got \(4, 4, 2\)"):
        w.write_images(0, {"x": np.zeros((1, 4, 4, 2), np.uint8)})


def test_async_writer_keeps_order_and_raises_a_failed_write_at_flush():
    seen = []

    class Recorder(writers.MetricWriter):
        def write_scalars(self, step, scalars):
            if scalars.get("boom"):
                raise OSError("disk full")
            seen.append(step)

    w = writers.AsyncWriter(Recorder())
    for step in range(50):
        w.write_scalars(step, {"loss": step})
    w.flush()
    assert seen == list(range(50))
    w.write_scalars(50, {"boom": 1})
    with pytest.raises(OSError, match="disk full"):
        w.flush()
    w.close()


def test_progress_report_writes_the_step_rate():
    rows = []

    class Recorder(writers.MetricWriter):
        def write_scalars(self, step, scalars):
            rows.append((step, scalars))

    report = writers.ProgressReport(10, Recorder(), every_secs=0.0)
    for step in range(1, 4):
        report(step)
    assert [s for s, _ in rows] == [2, 3]
    assert all(r["steps_per_sec"] > 0 for _, r in rows)


def test_a_runs_files_go_to_a_bucket_without_appending(tmp_path, monkeypatch):
    """metrics.jsonl, TensorBoard events, results with their panels, config.json: all
    written to ``gs://`` through etils.epath; nothing lands in a local ``gs:`` folder."""
    from vsegjax import viz
    from vsegjax.core import checkpoint
    from vsegjax import experiments
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    root = tmp_path / "bucket"
    run = "gs://my-bucket/runs/a"
    with fake_bucket(str(root)) as bucket:
        assert files.resolve(run) == run
        w = writers.create_writer(run)
        w.write_hparams({"seed": 0})
        w.write_scalars(1, {"loss": 2.0})
        w.flush()
        w.write_scalars(2, {"loss": 1.0})
        w.close()
        assert [r["loss"] for r in writers.read_jsonl(f"{run}/metrics.jsonl")
                if "loss" in r] == [2.0, 1.0]
        # A resumed run's writer keeps the earlier rows.
        w = writers.create_writer(run)
        w.write_scalars(3, {"loss": 0.5})
        w.close()
        assert [r["step"] for r in writers.read_jsonl(f"{run}/metrics.jsonl")
                if "loss" in r] == [1, 2, 3]

        viz.save_png(f"{run}/panels/example_000.png", np.full((4, 6, 3), 9, np.uint8))
        assert writers.write_results(run, 3, {"miou": 0.5}) == 1
        files.atomic_write_text(f"{run}/config.json", json.dumps({"task": "static"}))
        assert experiments.load_stage_config(run, "static").task == "static"
        with pytest.raises(FileNotFoundError, match="no checkpoints folder in gs://"):
            checkpoint.load_state_tree(run)
        assert bucket.appends == 0
    local = root / "my-bucket" / "runs" / "a"
    assert os.listdir(cwd) == []
    acc = _read(str(local))
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(1, 2.0), (2, 1.0), (3, 0.5)]
    # Each flush uploaded its own event file.
    assert len(list(local.glob("events.out.tfevents.*"))) == 3
    evals = _read(str(local / "eval"))
    assert [e.value for e in evals.Scalars("miou")] == [0.5]
    assert evals.Images("panels/example_000")[0].width == 6


def test_tensorflow_is_not_a_dependency():
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(os.path.dirname(__file__), "..", "setup.cfg"))
    required = cfg["options"]["install_requires"]
    assert "tensorflow-cpu" not in required and "tensorflow>" not in required
