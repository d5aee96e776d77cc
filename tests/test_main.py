"""The entry point, the preview job and the promises the README makes."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from vsegjax.data import datasets

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run_main(*args):
    return subprocess.run([sys.executable, "-m", "vsegjax.main", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_preview_job_builds_tiny_data_and_writes_pngs(tmp_path):
    result = _run_main("--config=configs/synthetic_preview.py", f"--workdir={tmp_path / 'run'}",
                       f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.data.config=tiny",
                       "--config.data.num_workers=1", "--config.preview.num_snippets=2")
    assert result.returncode == 0, result.stderr[-2000:]
    pngs = sorted((tmp_path / "run" / "preview").glob("*.png"))
    assert [p.name for p in pngs] == ["snippet_0000.png", "snippet_0001.png"]
    assert (tmp_path / "run" / "config.json").exists()
    import cv2
    image = cv2.imread(str(pngs[0]))
    assert image is not None and image.shape[0] > 5 * 48  # one row per frame (5 frames)


def test_unknown_config_field_is_named(tmp_path):
    result = _run_main("--config=configs/synthetic_preview.py", f"--workdir={tmp_path}",
                       "--config.data.no_such_field=1")
    assert result.returncode != 0
    assert "no_such_field" in result.stderr and "Traceback" not in result.stderr


def test_missing_dataset_says_how_to_build(tmp_path):
    import ml_collections
    data = ml_collections.ConfigDict(dict(name="synthetic_video", config="tiny",
                                          data_dir=str(tmp_path), build_if_missing=False))
    with pytest.raises(FileNotFoundError, match="data_prep/synthetic_video.py"):
        datasets.ensure_built(data)


def test_unknown_dataset_is_named():
    import ml_collections
    with pytest.raises(ValueError, match="data.name"):
        datasets.get_builder(ml_collections.ConfigDict(dict(name="nope", data_dir="/tmp")))


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"^    (python3 -m venv .*)$", readme, flags=re.M)
    assert len(commands) == 2, commands
    assert "vsegjax.main" in commands[0] and "pytest" in commands[1]
    assert commands[1] in ci.splitlines()


def test_truncated_data_file_is_named(tmp_path):
    import ml_collections
    from vsegjax.data import synthetic_tfds
    builder = synthetic_tfds.build(str(tmp_path), "tiny", num_workers=1)
    shard = next(pathlib.Path(builder.data_dir).glob("*-train.array_record-*"))
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)
    data = ml_collections.ConfigDict(dict(name="synthetic_video", config="tiny",
                                          data_dir=str(tmp_path)))
    with pytest.raises(IOError, match=shard.name):
        source = datasets.open_split(data, "train")
        for i in range(len(source)):
            source[i]


def test_every_registered_dataset_has_its_prep_script():
    import ml_collections
    for name in ("synthetic_video", "camvid", "sintel", "flying_chairs", "kitti_2015",
                 "vsegjax_davis", "cityscapes_sequences", "user_video"):
        how = datasets.how_to_build(ml_collections.ConfigDict(dict(name=name, data_dir="D",
                                                                   config="default")))
        script = re.search(r"data_prep/\S+\.py", how).group(0)
        assert (ROOT / script).exists(), (name, script)


def test_data_dir_defaults_to_tfds_own(monkeypatch):
    from tensorflow_datasets.core import constants

    from configs import common
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    assert os.path.expanduser(common.data().data_dir) == constants.get_default_data_dir()
    monkeypatch.setenv("TFDS_DATA_DIR", "/mnt/tfds")
    assert common.data().data_dir == constants.get_default_data_dir() == "/mnt/tfds"
