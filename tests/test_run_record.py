"""A run's record: a resume keeps its config.json and refuses a changed model or data."""

import json

import pytest

from vsegjax import experiments



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
