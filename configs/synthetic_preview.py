"""Builds the synthetic_video dataset (if missing) and writes previews of its snippets.

    python -m vsegjax.main --config=configs/synthetic_preview.py --workdir=runs/preview
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.task = "preview"
    config.data = ml_collections.ConfigDict()
    config.data.name = "synthetic_video"
    config.data.config = "default"  # or "tiny"
    config.data.data_dir = "~/tensorflow_datasets"
    config.data.build_if_missing = True
    config.data.num_workers = 0  # 0 = one rendering process per core
    config.preview = ml_collections.ConfigDict()
    config.preview.split = "validation"
    config.preview.num_snippets = 4
    return config
