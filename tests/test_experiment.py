"""The one experiment runner: how stages resolve, and every config end to end."""

import importlib
import json
import pathlib
import subprocess
import sys

import jax
import ml_collections
import pytest

from configs import common
from vsegjax.data import synthetic_tfds
from vsegjax.core import checkpoint
from vsegjax import experiments
ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py")
                 if p.stem not in ("__init__", "common", "synthetic_preview"))


def config_variants() -> list[tuple[str, str | None]]:
    out = []
    for name in CONFIGS:
        module = importlib.import_module(f"configs.{name}")
        out += [(name, v) for v in getattr(module, "VARIANTS", (None,))]
    out.append(("vplr_synthetic", "d_nogeom"))
    return out


def load(name: str, variant: str | None = None) -> ml_collections.ConfigDict:
    module = importlib.import_module(f"configs.{name}")
    return module.get_config(variant) if variant else module.get_config()


def two_stages(**b_overrides) -> ml_collections.ConfigDict:
    c = common.base(num_steps=10)
    return common.set_stages(c, ("a", common.stage("static")),
                             ("b", common.stage("static", **b_overrides)))


# --------------------------------------------------------------------------- resolution


def test_stage_overrides_merge_into_the_top_level_blocks():
    c = two_stages(train=dict(num_steps=3), optimizer=dict(learning_rate=1e-4))
    a, b = experiments.resolve_stages(c, "/w")
    assert (a.config.train.num_steps, b.config.train.num_steps) == (10, 3)
    # Fields a stage does not set are the top-level ones.
    assert b.config.train.log_every == a.config.train.log_every == c.train.log_every
    assert b.config.optimizer.learning_rate == 1e-4
    assert b.config.optimizer.warmup_steps == c.optimizer.warmup_steps
    assert a.config.optimizer.learning_rate == c.optimizer.learning_rate
    assert (a.workdir, b.workdir) == ("/w/a", "/w/b")
    assert "stages" not in b.config and "stage_order" not in b.config


def test_top_level_num_steps_sets_every_stage_that_does_not_override_it():
    c = two_stages(train=dict(num_steps=3))
    c.train.num_steps = 7
    a, b = experiments.resolve_stages(c, "/w")
    assert (a.config.train.num_steps, b.config.train.num_steps) == (7, 3)


def test_a_dict_field_of_an_override_replaces_the_old_one_whole():
    stages = {s.name: s for s in experiments.resolve_stages(load("efc_synthetic", "tcc_fix"), "/w")}
    assert set(stages["flow_pretrain"].config.efc.loss_weights) == {"L_occ", "L_pm", "L_sm"}
    assert stages["flow_pretrain"].config.efc.mode == "flow_only"
    assert stages["efc"].config.efc.mode == "joint"  # the override is the stage's alone
    assert stages["efc"].init_from == "/w/flow_pretrain"
    assert tuple(stages["efc"].config.optimizer.frozen) == ("flow",)
    assert tuple(stages["flow_pretrain"].config.optimizer.get("frozen", ())) == ()


@pytest.mark.parametrize("value,want", [("previous", "/w/a"), ("", ""), ("a", "/w/a"),
                                        ("/runs/other", "/runs/other")])
def test_init_from_is_the_previous_stage_a_named_one_a_path_or_nothing(value, want):
    a, b = experiments.resolve_stages(two_stages(init_from=value), "/w")
    assert a.init_from == "" and b.init_from == want == b.config.train.init_from


def test_an_explicit_train_init_from_wins():
    c = two_stages()
    c.train.init_from = "/runs/mine"
    a, b = experiments.resolve_stages(c, "/w")
    assert a.init_from == b.init_from == "/runs/mine"


def test_a_disabled_stage_is_skipped_and_cannot_be_started_from():
    c = common.set_stages(common.base(num_steps=4), ("a", common.stage("static")),
                          ("b", common.stage("static", enabled=False)),
                          ("c", common.stage("static")))
    assert [s.name for s in experiments.resolve_stages(c, "/w")] == ["a", "c"]
    assert experiments.resolve_stages(c, "/w")[1].init_from == "/w/a"
    c.stages.c.init_from = "b"
    with pytest.raises(ValueError, match="stages.c.init_from: stage 'b' is disabled"):
        experiments.resolve_stages(c, "/w")


def test_a_stage_cannot_start_from_a_later_one():
    c = two_stages()
    c.stages.a.init_from = "b"
    with pytest.raises(ValueError, match="stages.a.init_from: stage 'b' runs after 'a'"):
        experiments.resolve_stages(c, "/w")


@pytest.mark.parametrize("steps", [0, -5, 2.5])
def test_bad_num_steps_are_named_before_anything_runs(steps):
    c = two_stages(train=dict(num_steps=steps))
    with pytest.raises(ValueError, match=r"stages\.b\.train\.num_steps: an int >= 1"):
        experiments.resolve_stages(c, "/w")
    if isinstance(steps, int):  # the top-level field is typed int by ml_collections
        c = two_stages()
        c.train.num_steps = steps
        with pytest.raises(ValueError, match=r"config field train\.num_steps"):
            experiments.resolve_stages(c, "/w")


def test_unknown_task_and_a_wrong_stage_order_are_named():
    c = two_stages()
    c.stages.b.task = "nope"
    with pytest.raises(ValueError, match="stages.b.task: 'nope'"):
        experiments.resolve_stages(c, "/w")
    c = two_stages()
    c.stage_order = ("a",)
    with pytest.raises(ValueError, match="stage_order"):
        experiments.resolve_stages(c, "/w")


def test_a_stage_config_is_read_back_from_a_run_folder(tmp_path):
    config = load("efc_synthetic")
    (tmp_path / "config.json").write_text(config.to_json())
    from_top = experiments.load_stage_config(str(tmp_path), "efc")
    assert from_top.efc.mode == "joint" and "stages" not in from_top
    (tmp_path / "efc").mkdir()
    (tmp_path / "efc" / "config.json").write_text(json.dumps({"efc": {"mode": "flow_only"}}))
    assert experiments.load_stage_config(str(tmp_path), "efc").efc.mode == "flow_only"
    with pytest.raises(ValueError, match="no enabled stage 'grfp'"):
        experiments.load_stage_config(str(tmp_path), "grfp")
    with pytest.raises(FileNotFoundError, match="folder of a run"):
        experiments.load_stage_config(str(tmp_path / "nothing"), "efc")


def test_help_imports_no_jax_and_lists_configs_and_tasks():
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, vsegjax.main; "
         "print(sorted(m for m in ('jax', 'tensorflow', 'orbax') if m in sys.modules))"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.strip() == "[]"
    out = subprocess.run([sys.executable, "-m", "vsegjax.main", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert "grfp_synthetic.py" in out.stdout and "warp_refine" in out.stdout


def test_main_names_a_bad_stage_field_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "vsegjax.main",
                          "--config=configs/grfp_synthetic.py", f"--workdir={tmp_path}",
                          "--config.stages.grfp.train.num_steps=0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "stages.grfp.train.num_steps" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name,variant", config_variants())
def test_every_config_resolves_and_builds_its_models(name, variant):
    """Every stage of every config (and variant) builds its task and its variables."""
    for stage in experiments.resolve_stages(load(name, variant), "/w"):
        task = experiments.build_task(stage)
        shapes = jax.eval_shape(task.init_variables, jax.random.PRNGKey(0))
        assert shapes["params"], (name, variant, stage.name)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    synthetic_tfds.build(str(data_dir), "tiny", num_workers=1)
    return str(data_dir)


def shrink(c: ml_collections.ConfigDict, data_dir: str) -> ml_collections.ConfigDict:
    """The config on the tiny synthetic data (48x64, 5 frames), 2 steps a stage, small nets."""
    c.data = common.data(config="tiny", data_dir=data_dir)
    c.model.num_classes = len(c.data.class_names)
    if "backbone" in c.model:
        c.model.width = 8
    c.input.batch_size = 8  # one example per fake device
    c.input.worker_count = 0
    c.input.augment.resize = c.input.augment.crop_size = (48, 64)
    if "window" in c.input:
        c.input.window = (3, 1) if c.input.window[1] else (3, 0)
    c.train.update(dict(num_steps=2, log_every=1, eval_every=0, async_checkpoints=False))
    for stage in c.stages.values():
        if "train" in stage:
            for key in ("num_steps", "eval_every"):
                if key in stage.train:
                    stage.train[key] = 2 if key == "num_steps" else 0
    c.eval.update(dict(num_snippets=2, num_panels=1, batch_size=8))
    if "flow" in c and c.flow.source == "flownet":
        c.flow.update(dict(width=0.125, num_levels=4))
    if "efc" in c:
        if c.efc.unlabelled_data is not None:
            c.efc.unlabelled_data = common.data(config="tiny", data_dir=data_dir)
            c.efc.unlabelled_batch_size = 8
        c.efc.pairs_per_snippet = 1
        c.efc.flow.joint_channels = 16
        c.efc.flow.extra_channels = (16,)
    if "sdc" in c:
        c.sdc.width, c.sdc.depth = 8, 1
    if "vplr" in c:
        c.vplr.motion = "dis"  # the Cityscapes config's "sdc" needs a trained SDC run
        c.vplr.propagated_batch_size = 8
    if "warp_refine" in c:
        c.warp_refine.k = min(int(c.warp_refine.k), 3)
        c.eval.update(dict(num_videos=2, num_frames=5))  # labelled frame 4 must exist
    return c


# End to end, six configs in the slow run (one per code path, run by CI); every other
# config and variant is `extended` (by hand): grfp_cityscapes at this size needs more than
# 24 GiB (ResNet-50 on 8 fake devices) and grfp_camvid the CamVid sample, and of EFC's
# nine variants three are enough (the others differ in weights and flags, and each still
# resolves and builds above).
SLOW = {("static_synthetic", None), ("camvid_static", None), ("warp_refine_synthetic", None),
        ("sdc_synthetic", "prediction"), ("vplr_synthetic", "e"),
        ("efc_synthetic", "tcc_single_om")}
EFC_END_TO_END = ("full", "tcc_single_om", "ul_oe_tc")


@pytest.mark.parametrize("name,variant", [
    pytest.param(n, v, marks=pytest.mark.slow if (n, v) in SLOW else pytest.mark.extended)
    for n, v in config_variants() if n != "efc_synthetic" or v in EFC_END_TO_END])
def test_every_config_runs_end_to_end(tiny_data, tmp_path, name, variant):
    config = shrink(load(name, variant), tiny_data)
    results = experiments.run(config, str(tmp_path))
    saved = json.loads((tmp_path / "eval_metrics.json").read_text())
    assert saved == json.loads(json.dumps(results)) and saved
    for stage in experiments.resolve_stages(config, str(tmp_path)):
        folder = pathlib.Path(stage.workdir)
        assert json.loads((folder / "config.json").read_text())["train"]["num_steps"] == 2
        assert int(checkpoint.load_state_tree(str(folder))["step"]) == 2, stage.name
        rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        assert all(r["learning_rate"] >= 0 for r in rows if "loss" in r)
    assert list((tmp_path / "eval").glob("events.out.tfevents.*"))


def test_results_and_panels_go_to_tensorboard(tmp_path):
    import numpy as np
    from tensorboard.backend.event_processing import event_accumulator

    from vsegjax import viz
    from vsegjax.core import writers
    viz.save_png(str(tmp_path / "panels" / "example_000.png"), np.full((8, 12, 3), 200, np.uint8))
    n = writers.write_results(str(tmp_path), 7, {"grfp": {"miou": 0.5, "name": "x"},
                                                 "num_snippets": 3, "flag": None})
    assert n == 1
    # TensorBoard's own reader (no TensorFlow involved) finds the scalars and the panel.
    acc = event_accumulator.EventAccumulator(str(tmp_path / "eval"), size_guidance={
        event_accumulator.IMAGES: 0})
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["grfp/miou", "num_snippets"]
    assert [(e.step, e.value) for e in acc.Scalars("num_snippets")] == [(7, 3.0)]
    (image,) = acc.Images("panels/example_000")
    assert (image.step, image.width, image.height) == (7, 12, 8)


def test_orbax_info_lines_are_dropped_and_its_warnings_kept():
    import logging

    from absl import logging as absl_logging

    from vsegjax.core import writers
    writers.quiet_orbax()
    writers.quiet_orbax()  # idempotent
    logger = absl_logging.get_absl_logger()
    assert sum(isinstance(f, writers._DropOrbaxInfo) for f in logger.filters) == 1

    def record(level, path, message="m"):
        return logging.LogRecord("absl", level, path, 1, message, None, None)
    orbax = "/x/site-packages/orbax/checkpoint/checkpoint_manager.py"
    assert not logger.filter(record(logging.INFO, orbax))
    assert logger.filter(record(logging.WARNING, orbax))
    assert logger.filter(record(logging.INFO, "/x/vsegjax/core/trainer.py"))
    # Expected when a run is read back (vsegjax.segment printed seven of these).
    expected = 'Item "meta" was found in the checkpoint, but could not be restored. Please ...'
    assert not logger.filter(record(logging.WARNING, orbax, expected))
    assert logger.filter(record(logging.WARNING, "/x/vsegjax/x.py", expected))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["static_synthetic", "grfp_synthetic", "efc_synthetic"])
def test_evaluation_sharded_over_eight_devices_equals_one_device(tiny_data, tmp_path, name):
    """The training-time evaluation reads each process' rows of a global batch (rounded up
    to the devices and padded) and sums confusion matrices and flow errors on the mesh."""
    import jax
    import numpy as np

    from vsegjax.core import inputs as data

    from vsegjax.core import sharding
    config = shrink(load(name, None), tiny_data)
    config.eval.update(dict(num_snippets=5, batch_size=3))  # 3 -> 8 rows over 8 devices
    stage = experiments.resolve_stages(config, str(tmp_path))[-1]
    task = experiments.build_task(stage)
    variables = dict(task.init_variables(jax.random.PRNGKey(0)))
    params = variables.pop("params")
    scores = {}
    for n in (1, 8):
        task.mesh = sharding.make_mesh(n)
        scores[n] = task.evaluate(params, variables, 0)
    assert scores[1].keys() == scores[8].keys() and "miou" in scores[1]
    if name == "efc_synthetic":
        assert "epe_all" in scores[1]
    for key in scores[1]:
        assert scores[8][key] == pytest.approx(scores[1][key], rel=1e-5), key
    batches = list(data.eval_batches(stage.config, (0, 0), mesh=sharding.make_mesh(8)))
    assert [int(np.sum(b["valid"])) for b in batches] == [5]  # one global batch of 8 rows
    frames = batches[0]["frames"]
    assert frames.shape[0] == 8 and len({s.device for s in frames.addressable_shards}) == 8


def test_per_process_evaluation_rows_cover_the_split_once(tiny_data, tmp_path, monkeypatch):
    """The final reports' split: process p of P takes rows p, p + P, ... of each global
    batch; over all P processes every snippet is evaluated exactly once, and one process
    gets the plain batches."""
    import jax
    import numpy as np

    from vsegjax.core import inputs as data

    from vsegjax.core import sharding
    config = shrink(load("static_synthetic", None), tiny_data)
    config.eval.update(dict(num_snippets=7, batch_size=3))
    stage = experiments.resolve_stages(config, str(tmp_path))[-1]
    plain = list(data.eval_batches(stage.config, (0, 0)))
    single = list(data.eval_batches(stage.config, (0, 0), per_process=True))
    assert len(plain) == len(single)
    for a, b in zip(plain, single):
        np.testing.assert_array_equal(a["frames"], b["frames"])
        np.testing.assert_array_equal(a["valid"], b["valid"])
    seen = []
    for p in range(4):  # 3 rows -> global batches of 4, one row per process
        monkeypatch.setattr(jax, "process_count", lambda: 4)
        monkeypatch.setattr(jax, "process_index", lambda p=p: p)
        batches = list(data.eval_batches(stage.config, (0, 0), per_process=True))
        assert all(len(b["valid"]) == 1 for b in batches)
        seen += [int(i) for b in batches for i in b["index"][b["valid"]]]
        # A process' rows are the snippets its index names.
        for b in batches:
            if b["valid"][0]:
                k = int(b["index"][0])
                np.testing.assert_array_equal(b["frames"][0], plain[k // 3]["frames"][k % 3])
    assert sorted(seen) == list(range(7))
    monkeypatch.undo()
    # With a mesh the rows are padded to a multiple of its devices, so a report can put
    # them on every device (sharding.rows_to_mesh) and get its own rows back in order.
    mesh = sharding.make_mesh(8)
    (batch,) = data.eval_batches(stage.config, (0, 0), per_process=True, mesh=mesh)
    assert len(batch["valid"]) == 8 and int(batch["valid"].sum()) == 7
    placed = sharding.rows_to_mesh(batch["frames"], mesh)
    assert len({s.device for s in placed.addressable_shards}) == 8
    np.testing.assert_array_equal(sharding.rows_from_mesh(placed[:, 0, :2] * 2, mesh),
                                  batch["frames"][:, 0, :2] * 2)


def _numbers(tree, prefix=""):
    """The numbers of a report, by their path (lists of numbers kept whole)."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _numbers(sub, f"{prefix}/{key}").items()}
    return {prefix: tree} if isinstance(tree, (int, float, list)) else {}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["static_synthetic", "grfp_synthetic", "efc_synthetic",
                                  "sdc_synthetic"])
def test_final_reports_over_eight_devices_equal_one_device(tiny_data, tmp_path, name):
    """Each final report puts its process' rows on every device of the mesh
    (sharding.rows_to_mesh) and reads its rows back: the same numbers as on one device,
    from parameters placed on one device (sharding.to_mesh replicates them)."""
    import types

    import jax

    from vsegjax.core import sharding
    config = shrink(load(name, None), tiny_data)
    config.eval.update(dict(num_snippets=5, batch_size=3))  # 3 -> 8 rows over 8 devices
    stages = experiments.resolve_stages(config, str(tmp_path))
    tasks = [experiments.build_task(s) for s in stages]
    states = []
    for k, task in enumerate(tasks):
        variables = dict(task.init_variables(jax.random.PRNGKey(k)))
        params = variables.pop("params")
        states.append(types.SimpleNamespace(params=params, model_state=variables))
    reports = {}
    for n in (1, 8):
        for task in tasks:
            task.mesh = sharding.make_mesh(n)
        results = [experiments.StageResult(s, t, st, 0) for s, t, st in zip(stages, tasks, states)]
        reports[n] = _numbers(experiments.report_fn(stages[-1].task_name)(
            stages[-1].config, str(tmp_path / str(n)), results))
    assert reports[1].keys() == reports[8].keys() and len(reports[1]) > 3
    for key, value in reports[1].items():
        assert reports[8][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
