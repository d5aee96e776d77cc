"""Builds the synthetic_video TFDS dataset (ArrayRecord) and optionally writes a preview.

    python data_prep/synthetic_video.py --data_dir=~/tensorflow_datasets --config=default
"""

from absl import app, flags

from vsegjax.data import default_data_dir, synthetic_tfds

_DATA_DIR = flags.DEFINE_string("data_dir", default_data_dir(),
                                "TFDS data directory ($TFDS_DATA_DIR if set).")
_CONFIG = flags.DEFINE_enum("config", "default", ["default", "tiny"], "Builder config.")
_WORKERS = flags.DEFINE_integer("num_workers", None, "Rendering processes (default: all cores).")


def main(argv):
    del argv
    builder = synthetic_tfds.build(_DATA_DIR.value, _CONFIG.value, _WORKERS.value)
    print(f"synthetic_video/{builder.builder_config.name} ready in {builder.data_dir}")


if __name__ == "__main__":
    app.run(main)
