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
