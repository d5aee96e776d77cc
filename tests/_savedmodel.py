"""Helpers for the SavedModel test, run as subprocesses so that TensorFlow never loads in
the pytest process (TFDS behaves differently once it has).

    python tests/_savedmodel.py serve MODEL_DIR SIGNATURE IN.npz [IN2.npz ...]
        runs one signature on each input file, writing IN.out.npz beside it, with
        TensorFlow alone: jax, flax and vsegjax cannot be imported.
    python tests/_savedmodel.py export-grfp OUT_DIR
        writes the SavedModel of random_grfp_model().
"""

import importlib.abc
import sys

BLOCKED = ("jax", "jaxlib", "flax", "vsegjax")


class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the SavedModel must run without it")
        return None


def random_grfp_model(size=(48, 64)):
    """A GRFP model with random weights (seeded, so every process builds the same)."""
    import importlib

    import jax

    from vsegjax.inference import trained
    from vsegjax.methods.grfp.task import GRFPTask
    config = importlib.import_module("configs.grfp_synthetic").get_config()
    config.input.augment.resize = config.input.augment.crop_size = size
    config.flow.source = "farneback"
    config.grfp.kernel_size = 3
    task = GRFPTask(config)
    variables = dict(task.init_variables(jax.random.PRNGKey(1)))
    params = variables.pop("params")
    return task, trained.from_state(task, "grfp", params, variables)


def serve(model_dir, signature, *inputs):
    sys.meta_path.insert(0, _Blocked())
    import numpy as np
    import tensorflow as tf
    fn = tf.saved_model.load(model_dir).signatures[signature]
    for path in inputs:
        got = fn(**{k: tf.constant(v) for k, v in np.load(path).items()})
        np.savez(path[:-len(".npz")] + ".out.npz", **{k: v.numpy() for k, v in got.items()})


def export_grfp(out):
    import pathlib

    from vsegjax import export
    from vsegjax.inference import savedmodel
    _, model = random_grfp_model()
    savedmodel.save(model, pathlib.Path(out), export.signatures(model, ["cpu"]))


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(*sys.argv[2:])
    elif sys.argv[1] == "export-grfp":
        export_grfp(sys.argv[2])
    else:
        raise SystemExit(f"unknown command {sys.argv[1]!r}")
