"""Writes pictures of dataset snippets so a person can look at the data."""

from __future__ import annotations

import os

import ml_collections
import numpy as np
import tqdm

from vsegjax import viz
from vsegjax.data import datasets


def write_previews(source, out_dir: str, indices, palette: np.ndarray) -> list[str]:
    """One PNG grid per snippet (frame | labels | flow colour | occlusion, a row per frame)."""
    paths = []
    for i in tqdm.tqdm(list(indices), desc="preview", unit="snippet"):
        example = {k: np.asarray(v) for k, v in source[i].items()}
        path = os.path.join(out_dir, f"snippet_{i:04d}.png")
        viz.save_png(path, viz.snippet_preview(example, palette))
        paths.append(path)
    return paths


def run(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
    """Builds the configured dataset when missing and writes previews into ``workdir/preview``."""
    split = config.preview.split
    source = datasets.open_split(config.data, split)
    builder = datasets.get_builder(config.data)
    count = min(config.preview.num_snippets, len(source))
    paths = write_previews(source, os.path.join(workdir, "preview"), range(count),
                           viz.palette_for(datasets.palette_name(config.data)))
    print(f"{builder.info.full_name}: {len(source)} {split} snippets in {builder.data_dir}; "
          f"wrote {len(paths)} previews to {os.path.join(workdir, 'preview')}")
    return paths
