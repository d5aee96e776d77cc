"""Config fields are range-checked before anything runs, naming the field."""

import re

import pytest

from vsegjax import experiments



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
