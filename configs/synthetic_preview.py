"""Builds the synthetic_video dataset (if missing) and writes previews of its snippets.

    python -m vsegjax.main --config=configs/synthetic_preview.py --workdir=runs/preview
"""

import ml_collections

from vsegjax.data.datasets import data_block


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.task = "preview"
    # config "tiny" renders a handful of small snippets; num_workers 0 = one rendering
    # process per core.
    config.data = data_block("synthetic_video", "default")
    config.preview = ml_collections.ConfigDict()
    config.preview.split = "validation"
    config.preview.num_snippets = 4
    return config
