"""The Task interface: what the core and the apps may ask of a method, and its defaults."""

import jax
import pytest
from _toy_task import ToyTask, toy_config

from vsegjax.core.registry import Method, Registry
from vsegjax.core.task import Task
from vsegjax.methods import REGISTRY


def test_a_task_segments_exactly_when_it_gives_a_predictor():
    """The apps take a run's last stage whose task says it segments and ask it for its
    predictor: a task may not claim one without the other."""
    for name in REGISTRY:
        cls = REGISTRY.task_class(name)
        has_predictor = cls.predictor is not Task.predictor
        assert cls.segments == has_predictor, name
    segmenting = {n for n in REGISTRY if REGISTRY.task_class(n).segments}
    assert segmenting == {"static", "grfp", "efc", "vplr"}


def test_defaults_refuse_what_a_task_does_not_have():
    task = ToyTask(toy_config())
    assert not task.segments
    with pytest.raises(ValueError, match="gives no segmentation model"):
        task.predictor({}, {})
    with pytest.raises(ValueError, match="model.pretrained.*no backbone"):
        task.load_pretrained({}, "resnet50.pth")


def test_bind_mesh_is_where_evaluation_runs():
    task = ToyTask(toy_config())
    mesh = jax.make_mesh((1,), ("data",))
    task.bind_mesh(mesh)
    assert task.eval_mesh() is mesh


def test_the_registry_names_unknown_tasks_and_imports_lazily():
    reg = Registry({"toy": Method("_toy_task:ToyTask", "_toy_task:no_such_report")})
    assert list(reg) == ["toy"] and reg.task_class("toy") is ToyTask
    with pytest.raises(ValueError, match="unknown task 'grfp'; known: \\['toy'\\]"):
        reg.task_class("grfp")
    with pytest.raises(AttributeError):
        reg.report_fn("toy")
    both = reg.extended(static=REGISTRY["static"])
    assert sorted(both) == ["static", "toy"] and sorted(reg) == ["toy"]


def _first_batches(config_name: str, variant: str | None, tmp_path):
    """(task, the first host batch of its train_iterator) for each stage of a config,
    on the synthetic dataset (built on first use)."""
    import importlib

    import numpy as np

    from vsegjax import experiments
    module = importlib.import_module(f"configs.{config_name}")
    config = module.get_config(variant) if variant else module.get_config()
    if "efc" in config:
        config.efc.unlabelled_data = None
    config.input.batch_size = 8  # the tests' 8 CPU devices
    if "vplr" in config:
        config.vplr.propagated_batch_size = 8
    for stage in experiments.resolve_stages(config, str(tmp_path)):
        (tmp_path / stage.name).mkdir(parents=True, exist_ok=True)
        task = experiments.task_class(stage.task_name)(stage.config, workdir=stage.workdir)
        batch = next(task.train_iterator(0))
        yield task, {k: np.asarray(v) for k, v in batch.items()}


def _check_spec(task, batch):
    import numpy as np
    rows = task.config.input.batch_size
    spec = task.batch_spec(rows)
    rows = spec["frames"].shape[0]
    assert rows == batch["frames"].shape[0]
    for key, s in spec.items():
        assert key in batch, key
        assert batch[key].shape == s.shape, (key, batch[key].shape, s.shape)
        assert np.dtype(batch[key].dtype) == np.dtype(s.dtype), (key, batch[key].dtype)


@pytest.mark.parametrize("config_name", ["grfp_synthetic", "warp_refine_synthetic"])
def test_batch_spec_is_the_batch_the_pipeline_yields(config_name, tmp_path):
    """``vsegjax.compile`` compiles each step for ``batch_spec``: it must be what
    ``train_iterator`` gives for every key the loss reads (shape and dtype)."""
    for task, batch in _first_batches(config_name, None, tmp_path):
        _check_spec(task, batch)


@pytest.mark.slow
@pytest.mark.parametrize("config_name,variant", [("efc_synthetic", "full"),
                                                 ("sdc_synthetic", None),
                                                 ("vplr_synthetic", "c")])
def test_batch_spec_of_whole_snippet_and_mixed_batches(config_name, variant, tmp_path):
    for task, batch in _first_batches(config_name, variant, tmp_path):
        _check_spec(task, batch)


def test_only_a_task_with_a_segmenter_names_a_pretrained_source():
    """The trainer asks the task, not ``config.model``: SDC-Net's config has a model block
    of one field (the class count), and reading ``model.pretrained`` there stopped every
    SDC run at its first step."""
    from configs import sdc_synthetic, static_synthetic
    from vsegjax.methods.static.task import StaticSegmentationTask
    from vsegjax.methods.vplr.sdc import SDCTask
    assert SDCTask(sdc_synthetic.get_config()).pretrained_source() == ""
    config = static_synthetic.get_config()
    config.model.pretrained = "weights/resnet50"
    assert StaticSegmentationTask(config).pretrained_source() == "weights/resnet50"
    assert ToyTask(toy_config()).pretrained_source() == ""
