"""A run's record: a resume keeps its config.json and refuses a changed model or data."""

import json

import pytest

from vsegjax import experiments
from vsegjax.core import run_record


def test_changes_are_dotted_fields_with_old_and_new_values():
    old = {"model": {"width": 32, "depth": 2}, "train": {"num_steps": 2}}
    new = {"model": {"width": 48, "depth": 2}, "train": {"num_steps": 2}, "seed": 1}
    assert run_record.changes(old, new) == {"model.width": [32, 48], "seed": [None, 1]}


def test_a_resume_check_refuses_a_new_model_only_where_checkpoints_exist(tmp_path):
    old = {"model": {"width": 32}, "train": {"num_steps": 2}}
    run_record.write(str(tmp_path), old, {}, {"stage": "static", "task": "static"})
    assert json.loads((tmp_path / run_record.STAGE_FILE).read_text()) == {
        "stage": "static", "task": "static"}
    wider = {"model": {"width": 48}, "train": {"num_steps": 2}}
    assert run_record.check_resume(str(tmp_path), wider, "stage static") == {}  # nothing saved
    (tmp_path / "checkpoints" / "2").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"stage static: .*model.width: 32 -> 48"):
        run_record.check_resume(str(tmp_path), wider, "stage static")
    longer = {"model": {"width": 32}, "train": {"num_steps": 5}}  # train/eval/mesh: accepted
    assert run_record.check_resume(str(tmp_path), longer, "stage static") == {
        "train.num_steps": [2, 5]}


# 5. vsegjax.main overwrote an existing DIR/config.json unread on resume.
@pytest.mark.slow
def test_a_resume_keeps_the_runs_config_record(tmp_path):
    from configs import static_synthetic

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
