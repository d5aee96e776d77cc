"""A trained model as a TensorFlow SavedModel (``vsegjax.export --format=savedmodel``).

jax2tf's native serialisation wraps the same StableHLO that ``--format=stablehlo`` writes
in TF's ``XlaCallModule`` op, so TensorFlow alone (no JAX, no vsegjax) loads and serves
it::

    m = tf.saved_model.load("OUT")
    out = m.signatures["serving_default"](frames=frames)   # logits, labels

The weights are ``tf.Variable``s under ``OUT/variables/``, not constants in the graph:
``saved_model.pb`` stays small (protobuf refuses files over 2 GB) and TF Serving loads
them the usual way. A GRFP model gets a second signature, ``stgru_step``, with the inputs
of ``stgru_step.jax_exported`` (see ``vsegjax.export``). ``OUT/assets.extra/`` holds the
signature JSONs (class names, palette), where TF Serving keeps files that are not the
model.

Needs TensorFlow (``pip install 'vsegjax[export]'``); importing this module imports it.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from jax.experimental import jax2tf

from vsegjax.inference import trained


def _weights(tree: Any) -> tuple[list[tf.Variable], Any]:
    leaves, treedef = jax.tree.flatten(tree)
    return [tf.Variable(np.asarray(x), trainable=False) for x in leaves], treedef


def _convert(fn, num_args: int, platforms: Sequence[str]):
    # Weights first (fixed shapes), then the tensors whose batch is symbolic.
    return jax2tf.convert(fn, polymorphic_shapes=[None] + ["(b, _, _, _)"] * num_args,
                          with_gradient=False,
                          native_serialization_platforms=tuple(platforms))


def save(model: trained.TrainedModel, out: pathlib.Path, signatures: dict[str, dict],
         platforms: Sequence[str] = ("cpu",)) -> list[pathlib.Path]:
    """Writes the SavedModel into ``out``; ``signatures`` are the JSON descriptions
    (``"model"`` and, for GRFP, ``"stgru_step"``) stored under ``assets.extra/``."""
    h, w = model.input_size
    c = model.num_classes
    module = tf.Module()
    module.frame_weights, frame_tree = _weights(model.variables)

    def frame_fn(weights, frames):
        variables = jax.tree.unflatten(frame_tree, weights)
        return model.frame_logits(variables, frames).astype(jnp.float32)

    frame_tf = _convert(frame_fn, 1, platforms)

    def spec(channels: int, name: str) -> tf.TensorSpec:
        return tf.TensorSpec([None, h, w, channels], tf.float32, name=name)

    @tf.function(autograph=False, input_signature=[spec(3, "frames")])
    def serve(frames):
        logits = frame_tf(module.frame_weights, frames)
        return {"logits": logits, "labels": tf.argmax(logits, -1, output_type=tf.int32)}

    module.serve = serve
    exported = {"serving_default": serve}
    if model.recurrent:
        module.stgru_weights, stgru_tree = _weights(model.stgru)

        def step_fn(weights, h_prev, logits, frame, prev_frame, flow):
            stgru = jax.tree.unflatten(stgru_tree, weights)
            return model.stgru_step(stgru, h_prev, logits, frame, prev_frame, flow)

        step_tf = _convert(step_fn, 5, platforms)

        @tf.function(autograph=False, input_signature=[
            spec(c, "h_prev"), spec(c, "logits"), spec(3, "frame"), spec(3, "prev_frame"),
            spec(2, "flow")])
        def stgru_step(h_prev, logits, frame, prev_frame, flow):
            h_t, log_probs = step_tf(module.stgru_weights, h_prev, logits, frame, prev_frame,
                                     flow)
            return {"h": h_t, "log_probs": log_probs}

        module.stgru_step = stgru_step
        exported["stgru_step"] = stgru_step
    tf.saved_model.save(module, str(out), signatures=exported)
    extra = out / "assets.extra"
    extra.mkdir(exist_ok=True)
    written = [out / "saved_model.pb"]
    for name, signature in signatures.items():
        path = extra / ("signature.json" if name == "model" else f"{name}.signature.json")
        path.write_text(json.dumps(dict(signature, format="savedmodel"), indent=2))
        written.append(path)
    return written
