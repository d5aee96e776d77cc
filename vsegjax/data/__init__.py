"""Datasets (TFDS builders), the snippet format, the grain input pipeline and transforms."""

import os


def default_data_dir() -> str:
    """TFDS's own default data folder: ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``
    (as ``tfds.core.constants.get_default_data_dir``, without importing TFDS)."""
    return os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
