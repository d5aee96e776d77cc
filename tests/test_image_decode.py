"""A frame the JPEG decoder calls damaged is an error naming the file, not a grey picture."""

import os
import pathlib
import re

import cv2
import numpy as np
import pytest
from _autolabel_cli import run_autolabel

from vsegjax.data import image_decode, synthetic, video_datasets
from vsegjax.data.snippet_builder import BadExample, read_frame

C = len(synthetic.CLASSES)


def _damaged_jpeg_clip(clip) -> pathlib.Path:
    for png in sorted((clip / "frames").glob("*.png")):
        frame = cv2.resize(cv2.imread(str(png)), (160, 96))  # enough entropy-coded data
        cv2.imwrite(str(png.with_suffix(".jpg")), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
        png.unlink()
    bad = clip / "frames" / "00002.jpg"
    data = bytearray(bad.read_bytes())
    middle = len(data) // 2
    data[middle:middle + len(data) // 4] = bytes(len(data) // 4)
    assert data[-2:] == b"\xff\xd9"
    bad.write_bytes(bytes(data))
    return bad


def test_a_jpeg_the_decoder_calls_corrupt_is_named(clip, tmp_path, capfd):
    bad = _damaged_jpeg_clip(clip)
    assert cv2.imread(str(bad)) is not None  # OpenCV alone hands back a picture
    with pytest.raises(BadExample, match=rf"{re.escape(str(bad))}: the JPEG decoder reports "
                                         rf"damaged data \(Corrupt JPEG data"):
        read_frame(bad)
    read_frame(clip / "frames" / "00001.jpg")  # the intact ones decode as before
    capfd.readouterr()
    assert run_autolabel(clip, tmp_path / "out") == 2
    err = capfd.readouterr().err
    assert str(bad) in err and "damaged data" in err and err.count("\n") == 1
    # A dataset build skips it with --skip_bad and lists it, as it does a truncated file.
    cfg = video_datasets.user_video_config(clip / "frames", num_classes=C, frames_before=1,
                                           frames_after=1, skip_bad=True)
    builder = video_datasets.build("user_video", str(tmp_path / "tfds"), cfg)
    files = {f for e in builder.skipped["full"] for f in e["files"]}
    assert files == {str(bad)}


def test_output_on_stderr_during_a_jpeg_decode_is_passed_on(clip, capfd):
    """fd 2 points at a file while libjpeg runs; any line that is not its corruption
    warning goes back to the real stderr."""
    good = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1].tobytes()
    real = cv2.imdecode

    def noisy(buffer, flags):
        os.write(2, b"another thread says hello\n")
        return real(buffer, flags)

    capfd.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(image_decode.cv2, "imdecode", noisy)
        assert image_decode.decode(good, cv2.IMREAD_COLOR, "x.jpg").shape == (16, 16, 3)
    assert capfd.readouterr().err == "another thread says hello\n"
