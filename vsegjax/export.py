"""Export a trained run's model.

    python -m vsegjax.export --workdir=RUN --format=stablehlo|savedmodel --out=OUT [--stage=NAME]
        [--platforms=cpu,cuda,tpu] [--overwrite]

``stablehlo`` writes ``OUT/model.jax_exported``: the bytes of ``jax.export``'s
serialisation of the per-frame function ``frames float32 [B, H, W, 3] in [0, 1] ->
logits float32 [B, H, W, C]`` (the batch B symbolic, H x W the run's training size, the
weights inside), which any JAX runs without vsegjax::

    exp = jax.export.deserialize(open("OUT/model.jax_exported", "rb").read())
    logits = exp.call(frames)

and ``OUT/signature.json`` (inputs, outputs, class names, palette). For a GRFP run also
``OUT/stgru_step.jax_exported`` and ``OUT/stgru_step.signature.json``: one forward STGRU
step (GRFP eqs. 2-6), ``(h_prev, logits_t, frame_t, frame_prev, flow_t_to_prev) ->
(h_t, log_probs_t)``, so a server streams a video: ``h`` starts as the softmax of frame
0's logits, and each later frame's flow to the one before comes from the server's own
flow method (the run's is named in the signature).

``savedmodel`` writes a TensorFlow SavedModel of the same functions (jax2tf; TensorFlow
alone serves it, see ``vsegjax.inference.savedmodel``); it needs the ``export`` extra.
``onnx`` is not available; asking for it says why (``UNAVAILABLE``).
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from absl import app, flags

from vsegjax.inference import trained
from vsegjax.core import writers
FORMATS = ("stablehlo", "savedmodel")
# A folder holding one of these already holds an export.
MARKERS = ("model.jax_exported", "saved_model.pb")
# Asked for but not available, and why (docs/use.md has the details).
UNAVAILABLE = {
    "onnx": "not available: jax2onnx 0.17.1 converts this model only with a fixed batch "
            "(its jax.image.resize rule needs constant shapes), and onnxruntime 1.32 rejects "
            "the graph it writes ('Add' node: incompatible dimensions after a strided conv)",
}


def _flags() -> None:
    flags.DEFINE_string("workdir", None, "the run (the runner's workdir or a stage folder)")
    flags.DEFINE_string("format", "stablehlo", f"one of {list(FORMATS)}")
    flags.DEFINE_string("out", None, "output folder")
    flags.DEFINE_string("stage", None, "stage of the run (default: its last that segments)")
    flags.DEFINE_list("platforms", ["cpu", "cuda", "tpu"], "platforms to lower for")
    flags.DEFINE_bool("overwrite", False, "replace an existing export in OUT")


def _spec(shape: Sequence[Any]) -> dict[str, Any]:
    return {"shape": [d if isinstance(d, int) else str(d) for d in shape], "dtype": "float32"}


def signatures(model: trained.TrainedModel, platforms: Sequence[str]) -> dict[str, dict]:
    """What each exported function takes and gives (``"model"``, and ``"stgru_step"`` for
    a GRFP model), written beside it as JSON whatever the format."""
    h, w = model.input_size
    c = model.num_classes
    b = "B"
    common = dict(model.signature(), platforms=list(platforms))
    out = {"model": dict(common, function="frame_logits",
                         inputs={"frames": dict(_spec((b, h, w, 3)), range=[0.0, 1.0])},
                         outputs={"logits": _spec((b, h, w, c))})}
    if model.recurrent:
        out["stgru_step"] = dict(
            common, function="stgru_step",
            inputs={"h_prev": dict(_spec((b, h, w, c)), meaning="probabilities, frame t-1"),
                    "logits": dict(_spec((b, h, w, c)), meaning="frame model's, frame t"),
                    "frame": dict(_spec((b, h, w, 3)), range=[0.0, 1.0]),
                    "prev_frame": dict(_spec((b, h, w, 3)), range=[0.0, 1.0]),
                    "flow": dict(_spec((b, h, w, 2)),
                                 meaning="from frame t to frame t-1, (x, y) in pixels")},
            outputs={"h": _spec((b, h, w, c)), "log_probs": _spec((b, h, w, c))},
            start="h_0 = softmax(logits of frame 0); log_probs_0 = log_softmax of them",
            flow_source=type(model.flow_provider).__name__)
    return out


def export_stablehlo(model: trained.TrainedModel, out: pathlib.Path,
                     platforms: Sequence[str] = ("cpu",)) -> list[pathlib.Path]:
    """Writes ``model.jax_exported`` + ``signature.json`` (and the STGRU step's for a GRFP
    model) into ``out``; returns the files written."""
    h, w = model.input_size
    c = model.num_classes
    (b,) = jax.export.symbolic_shape("B")
    variables = model.variables
    sigs = signatures(model, platforms)

    def frame_fn(frames):
        return model.frame_logits(variables, frames).astype(jnp.float32)

    frames = jax.ShapeDtypeStruct((b, h, w, 3), jnp.float32)
    exp = jax.export.export(jax.jit(frame_fn), platforms=list(platforms))(frames)
    written = _write(out, "model", exp, sigs["model"])
    if model.recurrent:
        stgru = model.stgru

        def step_fn(h_prev, logits, frame, prev_frame, flow):
            return model.stgru_step(stgru, h_prev, logits, frame, prev_frame, flow)

        state = jax.ShapeDtypeStruct((b, h, w, c), jnp.float32)
        image = jax.ShapeDtypeStruct((b, h, w, 3), jnp.float32)
        flow = jax.ShapeDtypeStruct((b, h, w, 2), jnp.float32)
        exp = jax.export.export(jax.jit(step_fn), platforms=list(platforms))(
            state, state, image, image, flow)
        written += _write(out, "stgru_step", exp, sigs["stgru_step"])
    return written


def _write(out: pathlib.Path, name: str, exp, signature: dict) -> list[pathlib.Path]:
    data = exp.serialize()
    path = out / f"{name}.jax_exported"
    sig = out / ("signature.json" if name == "model" else f"{name}.signature.json")
    path.write_bytes(bytes(data))
    sig.write_text(json.dumps(signature, indent=2))
    return [path, sig]


def export(workdir: str, fmt: str, out: str, stage: str | None = None,
           platforms: Sequence[str] = ("cpu",), overwrite: bool = False) -> list[pathlib.Path]:
    """Exports the run in ``workdir`` as ``fmt`` into ``out``; returns the files written."""
    if fmt in UNAVAILABLE:
        raise ValueError(f"--format={fmt}: {UNAVAILABLE[fmt]}; use --format=stablehlo")
    if fmt not in FORMATS:
        raise ValueError(f"--format={fmt}: choose from {list(FORMATS)}")
    dst = pathlib.Path(out).expanduser().resolve()
    if dst.is_file():
        raise ValueError(f"--out={out} is a file, not a folder")
    if any((dst / name).exists() for name in MARKERS) and not overwrite:
        raise ValueError(f"--out={out} already holds an export; pass --overwrite to "
                         f"replace it")
    if fmt == "savedmodel":
        try:
            # TensorFlow is optional (the export extra); only this format needs it.
            from vsegjax.inference import savedmodel
        except ImportError as e:
            raise ValueError(f"--format=savedmodel needs TensorFlow ({e}); install it with "
                             f"pip install 'vsegjax[export]'") from None
    writers.quiet_orbax()
    model = trained.load(workdir, stage)
    dst.mkdir(parents=True, exist_ok=True)
    if fmt == "savedmodel":
        return savedmodel.save(model, dst, signatures(model, platforms), platforms)
    return export_stablehlo(model, dst, platforms)


def main(argv) -> None:
    del argv
    f = flags.FLAGS
    for name in ("workdir", "out"):
        if not getattr(f, name):
            raise app.UsageError(f"--{name} is required")
    try:
        written = export(f.workdir, f.format, f.out, f.stage, f.platforms, f.overwrite)
    except (ValueError, FileNotFoundError) as e:
        print(f"vsegjax.export: {e}", file=sys.stderr)
        sys.exit(1)
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    _flags()
    app.run(main)
