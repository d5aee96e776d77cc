"""Tests for vsegjax.viz: palettes, label colouring, the flow wheel, panels and previews."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vsegjax import viz


def test_palettes_shapes_and_known_colours():
    assert viz.CITYSCAPES_PALETTE.shape == (19, 3)
    assert viz.CAMVID_PALETTE.shape == (11, 3)
    assert viz.SYNTHETIC_PALETTE.shape == (10, 3)
    for p in (viz.CITYSCAPES_PALETTE, viz.CAMVID_PALETTE, viz.SYNTHETIC_PALETTE):
        assert p.dtype == np.uint8
        assert len({tuple(c) for c in p}) == len(p), "colours must be distinct"
    assert tuple(viz.CITYSCAPES_PALETTE[0]) == (128, 64, 128)    # road
    assert tuple(viz.CITYSCAPES_PALETTE[10]) == (70, 130, 180)   # sky
    assert tuple(viz.CITYSCAPES_PALETTE[13]) == (0, 0, 142)      # car
    assert tuple(viz.CITYSCAPES_PALETTE[18]) == (119, 11, 32)    # bicycle
    assert tuple(viz.CAMVID_PALETTE[0]) == (128, 128, 128)       # sky
    assert tuple(viz.CAMVID_PALETTE[4]) == (60, 40, 222)         # pavement
    assert tuple(viz.CAMVID_PALETTE[10]) == (0, 128, 192)        # bicyclist
    syn = dict(zip(viz.SYNTHETIC_CLASSES, map(tuple, viz.SYNTHETIC_PALETTE)))
    assert syn["road"] == (128, 64, 128) and syn["car"] == (0, 0, 142)
    assert len(viz.SYNTHETIC_CLASSES) == 10 and viz.SYNTHETIC_CLASSES[-1] == "sign"


def test_palette_for_names_counts_and_fallback():
    np.testing.assert_array_equal(viz.palette_for("Cityscapes"), viz.CITYSCAPES_PALETTE)
    np.testing.assert_array_equal(viz.palette_for(11), viz.CAMVID_PALETTE)
    np.testing.assert_array_equal(viz.palette_for("synthetic"), viz.SYNTHETIC_PALETTE)
    generic = viz.palette_for(37)
    assert generic.shape == (37, 3) and generic.dtype == np.uint8
    assert len({tuple(c) for c in generic}) == 37
    np.testing.assert_array_equal(generic, viz.generic_palette(37))  # deterministic
    with pytest.raises(ValueError, match="unknown palette"):
        viz.palette_for("pascal")


def test_colorize_labels_maps_ids_and_ignore():
    labels = np.array([[0, 1], [255, 2]], np.uint8)
    out = viz.colorize_labels(labels, viz.CAMVID_PALETTE, ignore_color=(1, 2, 3))
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], viz.CAMVID_PALETTE[0])
    np.testing.assert_array_equal(out[0, 1], viz.CAMVID_PALETTE[1])
    np.testing.assert_array_equal(out[1, 1], viz.CAMVID_PALETTE[2])
    np.testing.assert_array_equal(out[1, 0], (1, 2, 3))
    batched = viz.colorize_labels(np.stack([labels, labels]).astype(np.int32), "camvid")
    assert batched.shape == (2, 2, 2, 3)
    np.testing.assert_array_equal(batched[1, 1, 0], (0, 0, 0))
    with pytest.raises(ValueError, match="outside"):
        viz.colorize_labels(np.array([[11]]), viz.CAMVID_PALETTE)


def test_overlay_keeps_image_at_ignore_pixels():
    image = np.full((2, 3, 3), 100, np.uint8)
    labels = np.array([[0, 255, 1], [255, 0, 0]], np.uint8)
    palette = np.array([(200, 0, 0), (0, 200, 0)], np.uint8)
    out = viz.overlay(image, labels, palette, alpha=0.5)
    np.testing.assert_array_equal(out[labels == 255], image[labels == 255])
    np.testing.assert_array_equal(out[0, 0], (150, 50, 50))
    np.testing.assert_array_equal(out[0, 2], (50, 150, 50))
    np.testing.assert_array_equal(viz.overlay(image, labels, palette, alpha=0.0), image)


def test_flow_to_color_middlebury_hues():
    flow = np.array([[[0, 0], [5, 0], [0, 5], [-5, 0], [0, -5], [2.5, 0]]], np.float32)
    col = viz.flow_to_color(flow)
    assert col.shape == (1, 6, 3) and col.dtype == np.uint8
    np.testing.assert_array_equal(col[0, 0], (255, 255, 255))   # zero flow: white
    np.testing.assert_array_equal(col[0, 1], (255, 0, 0))       # +x (right): red (RGB order)
    r, g, b = col[0, 2]                                         # +y (down): yellow-orange
    assert r == 255 and 200 <= g < 255 and b == 0
    r, g, b = col[0, 3]                                         # -x (left): cyan
    assert r == 0 and 150 <= g < 255 and b == 255
    r, g, b = col[0, 4]                                         # -y (up): blue-violet
    assert r < 128 and g == 0 and b == 255
    np.testing.assert_array_equal(col[0, 5], (255, 127, 127))   # half magnitude: paler red
    # An explicit max_flow fixes the scale; beyond it colours darken; unknown flow is black.
    np.testing.assert_array_equal(viz.flow_to_color(flow, max_flow=10.0)[0, 1], (255, 127, 127))
    assert viz.flow_to_color(np.array([[[20.0, 0.0]]]), max_flow=10.0)[0, 0, 0] < 255
    np.testing.assert_array_equal(viz.flow_to_color(np.array([[[np.nan, 0.0]]])), [[[0, 0, 0]]])
    np.testing.assert_array_equal(viz.flow_to_color(np.zeros((2, 2, 2))), np.full((2, 2, 3), 255))


def test_color_wheel_legend_and_gate_colours():
    legend = viz.flow_color_wheel_legend(65)
    assert legend.shape == (65, 65, 3) and legend.dtype == np.uint8
    np.testing.assert_array_equal(legend[32, 32], (255, 255, 255))  # centre: zero flow
    np.testing.assert_array_equal(legend[32, 64], (255, 0, 0))      # right edge: red
    np.testing.assert_array_equal(legend[0, 0], (255, 255, 255))    # outside the disc
    gate = viz.gate_to_color(np.array([[0.0, 0.5, 1.0, np.nan]]))
    assert gate.shape == (1, 4, 3) and gate.dtype == np.uint8
    assert gate[0, 0, 2] > gate[0, 0, 1] and gate[0, 2, 1] > gate[0, 2, 2]  # viridis: blue -> yellow
    np.testing.assert_array_equal(gate[0, 3], (0, 0, 0))


def test_make_panel_grid_size_and_conversions():
    h, w, pad = 20, 30, 2
    images = [np.zeros((h, w, 3), np.uint8), np.ones((h, w)), np.zeros((h, w), np.uint8),
              np.zeros((h, w, 1), np.float32), np.zeros((40, 60, 3), np.uint8),
              np.full((10, 15, 3), 255, np.uint8)]
    titles = [f"t{i}" for i in range(6)]
    panel = viz.make_panel(images, titles, ncols=3, pad=pad)
    bar = viz.title_bar_height(w)
    assert bar > 0
    assert panel.shape == (2 * (bar + h) + 3 * pad, 3 * w + 4 * pad, 3)
    assert panel.dtype == np.uint8
    # Tile 1 (float ones) is white; tile 5 (smaller, white) was resized into its cell.
    np.testing.assert_array_equal(panel[pad + bar: pad + bar + h, 2 * pad + w: 2 * pad + 2 * w],
                                  255)
    y0, x0 = 2 * pad + bar + h + bar, 3 * pad + 2 * w
    np.testing.assert_array_equal(panel[y0:y0 + h, x0:x0 + w], 255)
    # Default ncols for 6 tiles is 3; no titles means no bars.
    assert viz.make_panel(images).shape == (2 * h + 3 * pad, 3 * w + 4 * pad, 3)
    assert viz.make_panel(images[:2], None, ncols=2).shape == (h + 2 * pad, 2 * w + 3 * pad, 3)
    with pytest.raises(ValueError):
        viz.make_panel(images, titles[:2])


def test_save_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(9, 11, 3), dtype=np.uint8)
    path = tmp_path / "a" / "b" / "img.png"
    viz.save_png(path, image)
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(cv2.cvtColor(back, cv2.COLOR_BGR2RGB), image)
    assert [p.name for p in path.parent.iterdir()] == ["img.png"]  # no temp file left
    grey = rng.integers(0, 256, size=(5, 4), dtype=np.uint8)
    viz.save_png(path, grey)  # overwrite, single channel stays single channel
    np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), grey)


def _tiny_snippet(t: int = 3, h: int = 12, w: int = 16) -> dict:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, size=(t, h, w), dtype=np.uint8)
    labels[1] = 255  # an unlabelled frame
    flow = np.zeros((t - 1, h, w, 2), np.float32)
    flow[..., 0] = 2.0
    occ = np.zeros((t - 1, h, w), np.uint8)
    occ[:, :, -2:] = 1
    return {"frames": rng.integers(0, 256, size=(t, h, w, 3), dtype=np.uint8),
            "labels": labels, "has_label": np.array([True, False, True]),
            "flow_fwd": flow, "occ_fwd": occ}


def test_snippet_preview_grid_size_and_cells():
    t, h, w, pad = 3, 12, 16, 2
    example = _tiny_snippet(t, h, w)
    image = viz.snippet_preview(example, viz.SYNTHETIC_PALETTE)
    bar = viz.title_bar_height(w)
    cell_h = bar + h
    assert image.shape == (t * cell_h + (t + 1) * pad, 4 * w + 5 * pad, 3)
    assert image.dtype == np.uint8
    # Row 0: frame as is, flow +x is red, occlusion white where occluded.
    y0 = pad + bar
    np.testing.assert_array_equal(image[y0:y0 + h, pad:pad + w], example["frames"][0])
    flow_cell = image[y0:y0 + h, 3 * pad + 2 * w:3 * pad + 3 * w]
    np.testing.assert_array_equal(flow_cell, np.broadcast_to([255, 0, 0], (h, w, 3)))
    occ_cell = image[y0:y0 + h, 4 * pad + 3 * w:4 * pad + 4 * w]
    np.testing.assert_array_equal(occ_cell[:, -2:], 255)
    np.testing.assert_array_equal(occ_cell[:, :-2], 0)
    # Row 1 is unlabelled: the overlay is the plain frame.
    y1 = 2 * pad + cell_h + bar
    np.testing.assert_array_equal(image[y1:y1 + h, 2 * pad + w:2 * pad + 2 * w],
                                  example["frames"][1])
    # Last row: blank flow / occlusion cells.
    y2 = 3 * pad + 2 * cell_h + bar
    last = image[y2:y2 + h, 3 * pad + 2 * w:]
    assert len(np.unique(last[:, :w])) == 1 and len(np.unique(last[:, -w - pad:-pad])) == 1
    # max_frames limits the rows; without flow keys only two columns remain.
    assert viz.snippet_preview(example, "synthetic", max_frames=2).shape[0] == \
        2 * cell_h + 3 * pad
    no_flow = {k: example[k] for k in ("frames", "labels")}
    assert viz.snippet_preview(no_flow, 10).shape == (t * cell_h + (t + 1) * pad,
                                                      2 * w + 3 * pad, 3)
