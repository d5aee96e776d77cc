"""Label decoding: id maps, colour tables, unknown values named or mapped to ignore."""

import cv2
import numpy as np
import pytest

from vsegjax.data.labels import LabelEncoding, LabelError


def _write(path, array):
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), array)
    return path


def test_id_map_and_unknown_ids(tmp_path):
    raw = np.array([[0, 1, 11], [7, 1, 0]], np.uint8)
    path = _write(tmp_path / "l.png", raw)
    enc = LabelEncoding(ids={0: 0, 1: 1, 7: 2, 11: 255})
    np.testing.assert_array_equal(enc.decode(path), [[0, 1, 255], [2, 1, 0]])
    with pytest.raises(LabelError, match=r"l\.png: 1 pixels with unknown label ids: 11 x1"):
        LabelEncoding(ids={0: 0, 1: 1, 7: 2}).decode(path)
    lenient = LabelEncoding(ids={0: 0, 1: 1, 7: 2}, unknown_to_ignore=True).decode(path)
    assert lenient[0, 2] == 255


def test_plain_ids_checked_against_num_classes(tmp_path):
    path = _write(tmp_path / "l.png", np.array([[0, 3, 255]], np.uint8))
    np.testing.assert_array_equal(LabelEncoding(num_classes=4).decode(path), [[0, 3, 255]])
    with pytest.raises(LabelError, match="3 x1"):
        LabelEncoding(num_classes=3).decode(path)


def test_colour_table(tmp_path):
    rgb = np.array([[[128, 64, 128], [70, 70, 70]], [[1, 2, 3], [128, 64, 128]]], np.uint8)
    path = _write(tmp_path / "c.png", rgb)
    table = {(128, 64, 128): 0, (70, 70, 70): 2}
    with pytest.raises(LabelError, match=r"\(1,2,3\) x1"):
        LabelEncoding(colors=table).decode(path)
    out = LabelEncoding(colors=table, unknown_to_ignore=True).decode(path)
    np.testing.assert_array_equal(out, [[0, 2], [255, 0]])


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(LabelError, match="broken.png"):
        LabelEncoding(num_classes=3).decode(bad)
