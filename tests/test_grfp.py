"""GRFP end to end on the tiny synthetic dataset, and the configs."""

import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest

from vsegjax.data import synthetic_tfds
from vsegjax import experiments
from vsegjax.methods.grfp import task as grfp
ROOT = pathlib.Path(__file__).resolve().parents[1]


def grfp_stage(config):
    """The GRFP stage's resolved config (what the runner trains it with)."""
    return experiments.resolve_stages(config, "/tmp/unused")[-1].config


def load_config(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    synthetic_tfds.build(str(data_dir), "tiny", num_workers=1)
    return str(data_dir)


def tiny_config(data_dir, flow="dataset"):
    c = load_config("grfp_synthetic")
    c.data.data_dir = data_dir
    c.data.config = "tiny"  # 48x64, 5 frames, labelled frame 3
    c.input.batch_size = 8
    c.input.window = (3, 1)
    c.input.augment.resize = (48, 64)
    c.input.augment.crop_size = (48, 64)
    c.flow.source = flow
    c.train.num_steps = 6
    c.train.log_every = 3
    c.stages.grfp.train.num_steps = 4
    c.stages.grfp.train.log_every = 2
    c.grfp.kernel_size = 3
    c.eval.num_snippets = 5
    c.eval.num_panels = 2
    return c


def test_grfp_runs_both_stages_and_writes_metrics(tiny_data, tmp_path):
    config = tiny_config(tiny_data, flow="farneback")
    results = experiments.run(config, str(tmp_path))
    saved = json.loads((tmp_path / "eval_metrics.json").read_text())
    assert set(saved) >= {"static", "grfp", "grfp_fwbw"}
    for method in ("static", "grfp", "grfp_fwbw"):
        assert 0.0 <= saved[method]["miou"] <= 1.0
        assert 0.0 < saved[method]["temporal_consistency"] <= 1.0
        assert len(saved[method]["per_class_iou"]) == 10
    assert set(saved["grfp_miou_by_num_frames"]) == {"1", "2", "3", "4"}
    # One frame seen = the static prediction of the same static net. The two run through
    # differently batched XLA programs, so an argmax tie may flip on a few pixels (2.5e-6
    # apart seen on one CPU): equal to 1e-4, far below one class changing.
    assert saved["grfp_miou_by_num_frames"]["1"] == pytest.approx(saved["static"]["miou"],
                                                                  abs=1e-4)
    assert saved["num_snippets"] == 5 and results["grfp"]["miou"] == saved["grfp"]["miou"]
    carried = saved["label_carried_one_frame"]
    assert 0 <= carried["num_snippets"] <= 5
    if carried["num_snippets"]:
        assert 0.0 <= carried["copy"] <= 1.0 and 0.0 <= carried["flow"] <= 1.0
    assert sorted(p.name for p in (tmp_path / "panels").glob("*.png")) == [
        "example_000.png", "example_001.png"]
    assert (tmp_path / "static" / "checkpoints").is_dir()
    assert len(list((tmp_path / "preview").glob("snippet_*.png"))) == 2
    assert (tmp_path / "grfp" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_grfp_stage_starts_from_static_and_keeps_it_frozen(tiny_data, tmp_path):
    from vsegjax.core import checkpoint
    config = tiny_config(tiny_data)
    experiments.run(config, str(tmp_path))
    static = checkpoint.load_state_tree(str(tmp_path / "static"))
    video = checkpoint.load_state_tree(str(tmp_path / "grfp"))
    for a, b in zip(jax.tree.leaves(static["params"]["static"]),
                    jax.tree.leaves(video["params"]["static"])):
        np.testing.assert_array_equal(a, b)
    assert set(video["params"]["grfp"]) == {"forward", "backward", "fusion"}

    # A second seed of the GRFP stage alone, started from this run's static stage: its
    # report's static baseline is the frozen net inside the video model, the same one.
    first = json.loads((tmp_path / "eval_metrics.json").read_text())
    config.seed = 1
    config.stages.static.enabled = False
    config.stages.grfp.init_from = str(tmp_path / "static")
    second = experiments.run(config, str(tmp_path / "seed1"))
    assert second["static"]["miou"] == pytest.approx(first["static"]["miou"], abs=1e-6)
    assert second["static"]["per_class_iou"] == pytest.approx(first["static"]["per_class_iou"])
    assert not (tmp_path / "seed1" / "static").exists()


def test_loss_terms_follow_weights(tiny_data):
    config = grfp_stage(tiny_config(tiny_data))
    config.grfp.loss_weights = {"L_fwbw": 1.0, "L_fwd": 0.0}
    task = grfp.GRFPTask(config)
    assert task.weights == {"L_fwbw": 1.0}  # a zero weight is not computed
    config.grfp.loss_weights = {"L_typo": 1.0}
    with pytest.raises(ValueError, match="grfp.loss_weights"):
        grfp.GRFPTask(config)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["grfp_synthetic", "grfp_cityscapes", "grfp_camvid"])
def test_configs_build_their_models(name):
    config = load_config(name)
    stage = grfp_stage(config)
    task = grfp.GRFPTask(stage)
    shapes = jax.eval_shape(task.init_variables, jax.random.PRNGKey(0))
    assert "static" in shapes["params"] and "grfp" in shapes["params"]
    if name == "grfp_cityscapes":
        assert stage.optimizer.b1 == 0.95 and stage.optimizer.b2 == 0.99
        assert tuple(config.input.augment.crop_size) == (512, 512)
        assert task.window_len == 5 and "flow" in shapes["params"]
        assert set(task.frozen_params()) == {"flow"}
    if name == "grfp_camvid":  # the static stage is camvid_static's; GRFP reads the sequence
        static = experiments.resolve_stages(config, "/tmp/unused")[0].config
        # camvid_static's own stage, resolved as the runner resolves every stage.
        reference = experiments.resolve_stages(load_config("camvid_static"),
                                               "/tmp/unused")[0].config
        for block in ("data", "model", "train", "optimizer", "eval"):
            assert static[block].to_dict() == reference[block].to_dict(), block
        assert (stage.data.name, stage.data.config) == ("camvid_sequence", "t5_split50")
        assert stage.eval.split == "heldout" and stage.input.train_split == "train"
        assert task.window_len == 5 and stage.flow.source == "dis"
        assert set(task.frozen_params()) == {"static"}


@pytest.mark.slow
def test_learned_flow_is_computed_in_the_model_and_frozen(tiny_data):
    config = tiny_config(tiny_data, flow="flownet")
    config.flow.width = 0.125
    config.flow.num_levels = 4
    task = grfp.GRFPTask(grfp_stage(config))
    assert set(task.frozen_params()) == {"flow", "static"}
    variables = task.init_variables(jax.random.PRNGKey(0))
    params = variables.pop("params")
    batch = next(task.train_iterator(0))
    assert task.batch_fn is None  # flows come from the network, not the pipeline
    batch = {k: jax.numpy.asarray(v) for k, v in batch.items()
             if k not in ("flow_fwd", "flow_bwd")}  # the model must not need them
    grads = jax.grad(lambda p: task.loss_fn(p, variables, batch, jax.random.PRNGKey(1))[0])(params)
    flow_grads = jax.tree.leaves(grads["flow"])
    assert flow_grads and all(float(np.abs(g).max()) == 0.0 for g in flow_grads)
    assert any(float(np.abs(g).max()) > 0 for g in jax.tree.leaves(grads["grfp"]))


@pytest.mark.slow
def test_backward_mode_with_learned_flow_evaluates(tiny_data, tmp_path):
    """No flow in the batch (FlowNetS computes it) and the backward model alone."""
    config = tiny_config(tiny_data, flow="flownet")
    config.flow.width = 0.125
    config.flow.num_levels = 4
    config.grfp.mode = "backward"
    config.grfp.loss_weights = {"L_bwd": 1.0}
    config.train.num_steps = 2
    config.stages.grfp.train.num_steps = 2
    config.eval.num_snippets = 3
    results = experiments.run(config, str(tmp_path))
    # The backward pass reaches every frame, so its whole-snippet labelling is its own.
    assert results["grfp"]["temporal_consistency"] != results["static"]["temporal_consistency"]
    assert results["grfp_miou_by_num_frames"] == {}


@pytest.mark.parametrize("field,value,message", [
    ("grfp.mode", "sideways", "grfp.mode"), ("grfp.kernel_size", 4, "grfp.kernel_size"),
    ("input.window", (0, 2), "input.window")])
def test_bad_grfp_fields_are_named(tiny_data, tmp_path, field, value, message):
    config = tiny_config(tiny_data)
    config.grfp.mode = "forward"
    section, key = field.split(".")
    config[section][key] = value
    with pytest.raises(ValueError, match=message):
        experiments.run(config, str(tmp_path))


@pytest.mark.slow
def test_static_task_runs_and_reports_the_positional_baseline(tiny_data, tmp_path):
    config = load_config("static_synthetic")
    config.data.data_dir = tiny_data
    config.data.config = "tiny"
    config.input.augment.resize = (48, 64)
    config.input.augment.crop_size = (48, 64)
    config.input.class_uniform = True
    config.train.num_steps = 4
    config.eval.num_snippets = 4
    config.eval.num_panels = 1
    results = experiments.run(config, str(tmp_path))
    saved = json.loads((tmp_path / "eval_metrics.json").read_text())
    assert saved["static"]["miou"] == results["static"]["miou"]
    assert 0.0 < saved["positional_prior"]["miou"] < 1.0 and saved["resolution"] == [48, 64]
    assert (tmp_path / "panels" / "example_000.png").exists()


def test_carry_label_follows_the_flow():
    """A label map moved 2 px right and 1 down between frames is carried back exactly by
    the flow t -> t-1 of (-2, -1); where that flow leaves the image the result is 255."""
    from vsegjax.methods.grfp.report import carry_label
    rng = np.random.default_rng(0)
    prev = rng.integers(0, 5, (12, 16)).astype(np.uint8)
    cur = np.full_like(prev, 7)
    cur[1:, 2:] = prev[:-1, :-2]
    flow = np.broadcast_to(np.array([-2.0, -1.0], np.float32), (12, 16, 2))
    carried = carry_label(prev, flow)
    np.testing.assert_array_equal(carried[1:, 2:], cur[1:, 2:])
    assert np.all(carried[0] == 255) and np.all(carried[:, :2] == 255)
    np.testing.assert_array_equal(carry_label(prev, np.zeros((12, 16, 2))), prev)


def test_grfp_fields_reach_the_stgru_and_are_checked():
    """grfp.update_gate and grfp.dtype build the cell they name (the video model used to
    build its STGRU without the config's dtype); configs without them keep float32 and
    the per-class gate; bad values name the field."""
    import jax.numpy as jnp

    from vsegjax.methods.grfp.model import make_video_model
    config = grfp_stage(load_config("grfp_synthetic"))
    model = make_video_model(config.model, config.grfp)
    assert model.grfp.dtype == jnp.float32 and model.grfp.update_gate == "per_class"
    config.grfp.update_gate, config.grfp.dtype = "shared", "bfloat16"
    model = make_video_model(config.model, config.grfp)
    assert model.grfp.dtype == jnp.bfloat16 and model.grfp.update_gate == "shared"
    old = config.copy_and_resolve_references()
    with old.unlocked():
        del old.grfp["dtype"], old.grfp["update_gate"]
    # A config from before those fields, resolved as the runner does: the defaults.
    from vsegjax.methods.grfp.task import GRFPTask
    old = GRFPTask.resolve_config(old)
    model = make_video_model(old.model, old.grfp)
    assert model.grfp.dtype == jnp.float32  # model.dtype, float32 here
    assert model.grfp.update_gate == "per_class"
    for field, value in (("update_gate", "per_pixel"), ("dtype", "float16")):
        bad = config.copy_and_resolve_references()
        bad.grfp[field] = value
        with pytest.raises(ValueError, match=f"grfp.{field}"):
            grfp.validate_config(bad)
