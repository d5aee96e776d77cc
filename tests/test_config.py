"""vsegjax.core.config: each field's default written once, filled in and checked by the
runner (issue 37 item 5)."""

import ast
import json
import pathlib

import ml_collections
import pytest

from configs import common
from vsegjax.core import config as core_config
from vsegjax.core import run_record
from vsegjax.methods import REGISTRY
from vsegjax import experiments

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_resolve_fills_missing_fields_and_keeps_given_ones():
    template = ml_collections.ConfigDict(dict(
        train=dict(num_steps=None, log_every=50, divergence=dict(factor=100.0, window=50)),
        loss_weights=dict(L_a=1.0, L_b=1.0), seed=0))
    config = {"train": {"num_steps": 7, "divergence": {"window": 3}},
              "loss_weights": {"L_a": 2.0}, "other": {"x": 1}}
    out = core_config.resolve(config, template)
    assert out.train.num_steps == 7 and out.train.log_every == 50
    assert out.train.divergence.to_dict() == {"factor": 100.0, "window": 3}
    # A dict of free keys is one value: the term it lacks is not added (not computed).
    assert out.loss_weights.to_dict() == {"L_a": 2.0}
    assert out.seed == 0 and out.other.x == 1  # blocks the template lacks are kept
    # Resolving twice changes nothing; the input is not modified.
    assert core_config.resolve(out, template).to_dict() == out.to_dict()
    assert "log_every" not in config["train"]


def test_unknown_names_a_misspelt_field_but_not_another_tasks_block():
    templates = [ml_collections.ConfigDict(dict(train=dict(num_steps=1), grfp=dict(mode="x"),
                                                loss_weights=dict(L_a=1.0)))]
    config = dict(train=dict(num_steps=1, nmu_steps=2), grfp=dict(mode="y"),
                  loss_weights=dict(L_anything=1.0), trian=dict(a=1))
    assert sorted(core_config.unknown(config, templates)) == ["train.nmu_steps", "trian"]
    assert core_config.unknown(config, templates, ignore=("trian",)) == ["train.nmu_steps"]


def test_block_functions_refuse_unknown_fields():
    with pytest.raises(TypeError, match=r"train: unknown fields \['nmu_steps'\]"):
        core_config.train(10, nmu_steps=3)
    with pytest.raises(TypeError, match="eval: unknown fields"):
        core_config.eval_block(farnback=True)
    assert core_config.train(10, log_every=5).log_every == 5


def test_every_config_resolves_to_its_tasks_template():
    """Every stage of every config holds every field its task reads, and nothing a task
    of the config does not read (the runner refuses that)."""
    import importlib
    for path in sorted((ROOT / "configs").glob("*.py")):
        if path.stem in ("__init__", "common", "synthetic_preview"):
            continue
        module = importlib.import_module(f"configs.{path.stem}")
        for variant in getattr(module, "VARIANTS", (None,)):
            config = module.get_config(variant) if variant else module.get_config()
            for s in experiments.resolve_stages(config, "/tmp/unused"):
                resolved = REGISTRY.task_class(s.task_name).resolve_config(s.config)
                assert resolved.to_dict() == s.config.to_dict()


def test_runner_names_an_unknown_field_before_anything_trains():
    config = experiments_config()
    config.train.nmu_steps = 3
    with pytest.raises(ValueError, match=r"config field train.nmu_steps: unknown; no task "
                                         r"of this config \(grfp, static\) reads it"):
        experiments.resolve_stages(config, "/tmp/unused")
    config = experiments_config()
    config.stages.grfp.train = ml_collections.ConfigDict(dict(num_stpes=3))
    with pytest.raises(ValueError, match=r"config field stages.grfp.train.num_stpes: unknown"):
        experiments.resolve_stages(config, "/tmp/unused")


def experiments_config():
    from configs import grfp_synthetic
    return grfp_synthetic.get_config()


def test_a_config_without_optional_fields_runs_with_their_defaults():
    """A user's config may leave fields out: the stage's config has them, with the
    library's defaults."""
    config = experiments_config()
    with config.unlocked():
        del config.train["report_every_secs"], config.optimizer["b1"], config.grfp["dtype"]
        del config.model["dropout"]
    stage = experiments.resolve_stages(config, "/tmp/unused")[1]
    assert stage.config.train.report_every_secs == 30.0
    assert stage.config.optimizer.b1 == 0.95  # the grfp stage's own override
    assert stage.config.grfp.dtype is None  # None: the static net's model.dtype
    assert stage.config.model.dropout == 0.1


def test_resume_check_reads_an_older_record_with_the_defaults(tmp_path):
    """A stage recorded before a field existed resumes: the missing field counts as its
    default, so no change is reported; a real change still is."""
    config = experiments_config()
    stage = experiments.resolve_stages(config, str(tmp_path))[0]
    resolve = REGISTRY.task_class(stage.task_name).resolve_config
    record = run_record.config_json(stage.config)
    del record["optimizer"]["grad_clip_norm"], record["model"]["zero_init_residual"]
    (tmp_path / "checkpoints" / "5").mkdir(parents=True)
    (tmp_path / "config.json").write_text(json.dumps(record))
    new = run_record.config_json(stage.config)
    assert run_record.check_resume(str(tmp_path), new, "stage static", resolve=resolve) == {}
    new["optimizer"]["grad_clip_norm"] = 1.0
    with pytest.raises(ValueError, match="optimizer.grad_clip_norm: 0.0 -> 1.0"):
        run_record.check_resume(str(tmp_path), new, "stage static", resolve=resolve)


def test_no_library_code_repeats_a_config_default_with_get():
    """Config blocks are read as fields: no ``<config block>.get("field", default)``."""
    blocks = {"train", "tcfg", "mcfg", "optimizer", "opt_cfg", "cfg", "input", "eval", "data",
              "model", "grfp", "g", "efc", "e", "sdc", "s", "vplr", "v", "warp_refine", "w",
              "augment", "loss", "mesh", "config", "f"}
    found = []
    for path in sorted((ROOT / "vsegjax").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "get" and len(node.args) == 2:
                owner = node.func.value
                name = owner.attr if isinstance(owner, ast.Attribute) else \
                    owner.id if isinstance(owner, ast.Name) else ""
                if name in blocks:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}.get(...)")
    assert not found, found


def test_common_blocks_are_the_librarys():
    """configs/common.py builds on the library's blocks: the same fields and defaults."""
    assert common.train(5).to_dict() == core_config.train(5).to_dict()
    base = common.base(num_steps=5)
    for name, block in core_config.engine_template().items():
        if isinstance(block, ml_collections.ConfigDict):
            assert set(base[name].keys()) == set(block.keys()), name
