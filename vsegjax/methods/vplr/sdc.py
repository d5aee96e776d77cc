"""SDC-Net video reconstruction task (VPLR, METHODS.md §3): self-supervised on unlabelled video.

The pipeline delivers whole augmented snippets (labels dropped on the host: nothing here
uses them). Each step draws ``windows_per_snippet`` windows (frames t - n + 1 .. t, and
t + 1) per snippet from the step's key, so the draw resumes exactly; the ``SDCNet``
synthesises frame t+1 and is scored against the real one with ``L_rec`` (L1) and
``L_grad`` (L1 of image gradients). Config fields (``config.sdc``; defaults in
``methods/vplr/config.py``):

  mode: "prediction" (frames up to t) | "reconstruction" (also frame t+1).
  num_inputs, kernel_size, width, depth, max_motion, centre_logit: ``models.sdc.SDCNet``.
  loss_weights: {"L_rec": w, "L_grad": w}; a zero or absent weight is not computed.
  windows_per_snippet: windows drawn from each snippet per step.

Evaluation scores every window of the validation snippets against the copy-last-frame
baseline (frame t as the guess for t+1): PSNR (dB, mean over frames) and L1.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vsegjax import files, viz
from vsegjax.data import datasets, transforms
from vsegjax.evaluation import pooling
from vsegjax.methods.efc import losses as efc_losses
from vsegjax.methods.vplr import sdc_losses
from vsegjax.methods.vplr.sdc_model import SDCFlow, SDCNet, make_sdc_model, sdc_config
from vsegjax.core import checkpoint
from vsegjax.core import config as core_config
from vsegjax.core import inputs as data
from vsegjax.core import experiment
from vsegjax.core import sharding
from vsegjax.methods.vplr import config as vplr_config
from vsegjax.core.task import Task


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks ``config.sdc``'s task fields up front, naming the field at fault."""
    s = config.sdc
    weights = {k: float(v) for k, v in dict(s.loss_weights).items() if v}
    unknown = set(weights) - set(sdc_losses.DEFAULT_WEIGHTS)
    if unknown:
        raise ValueError(f"config field sdc.loss_weights: unknown terms {sorted(unknown)}; "
                         f"known: {sorted(sdc_losses.DEFAULT_WEIGHTS)}")
    if not weights:
        raise ValueError("config field sdc.loss_weights: every weight is zero")
    n = s.windows_per_snippet
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"config field sdc.windows_per_snippet: must be an int >= 1; got {n!r}")


def window_starts(rng: jax.Array, batch_size: int, num_frames: int, num_inputs: int,
                  per_snippet: int) -> jax.Array:
    """[B, P] index of each window's first frame; a window spans num_inputs + 1 frames."""
    last = num_frames - num_inputs - 1  # the window's last frame (t + 1) must exist
    if last < 0:
        raise ValueError(f"snippets of {num_frames} frames are too short for sdc.num_inputs="
                         f"{num_inputs} (a window needs {num_inputs + 1} frames)")
    return jax.random.randint(rng, (batch_size, per_snippet), 0, last + 1)


def gather_windows(frames: jax.Array, starts: jax.Array, length: int) -> jax.Array:
    """``frames[b, s:s + length]`` for frames [B, T, ...], starts [B, P] -> [B*P, length, ...]."""
    def one(snippet, s):
        return jax.lax.dynamic_slice_in_dim(snippet, s, length, axis=0)
    out = jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, 0))(frames, starts)
    return out.reshape((-1,) + out.shape[2:])


def all_windows(frames: np.ndarray, num_inputs: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (inputs [N, n, H, W, 3], target [N, H, W, 3]) of snippets [B, T, H, W, 3],
    ordered snippet-major."""
    t = frames.shape[1]
    idx = [(b, s) for b in range(frames.shape[0]) for s in range(t - num_inputs)]
    inputs = np.stack([frames[b, s:s + num_inputs] for b, s in idx])
    target = np.stack([frames[b, s + num_inputs] for b, s in idx])
    return inputs, target


class SDCTask(Task):
    """Trains ``SDCNet`` to synthesise frame t+1 (L1 + image-gradient loss)."""

    @classmethod
    def config_template(cls) -> ml_collections.ConfigDict:
        return core_config.extend(super().config_template(),
                                  **vplr_config.sdc_template_blocks())

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | None = None):
        super().__init__(config, workdir)
        validate_config(self.config)
        self.s = self.config.sdc
        self.model: SDCNet = make_sdc_model(self.s)
        self.weights = {k: float(v) for k, v in dict(self.s.loss_weights).items() if v}

    def init_variables(self, rng):
        h, w = self.input_shape()
        frames = jnp.zeros((1, self.model.num_inputs, h, w, 3))
        return dict(jax.jit(self.model.init)(rng, frames, jnp.zeros((1, h, w, 3))))

    def loss_fn(self, params, model_state, batch, rng):
        frames = batch["frames"]
        n = self.model.num_inputs
        starts = window_starts(rng, frames.shape[0], frames.shape[1], n,
                               int(self.s.windows_per_snippet))
        windows = gather_windows(frames, starts, n + 1)
        inputs, target = windows[:, :n], windows[:, n]
        out = self.model.apply({"params": params, **model_state}, inputs, target)
        total, values = efc_losses.combine(self.weights,
                                           sdc_losses.loss_terms(out["image"], target))
        copy_l1 = sdc_losses.l1_loss(inputs[:, -1], target)
        metrics = dict(values, l1=sdc_losses.l1_loss(out["image"], target), copy_l1=copy_l1,
                       motion_abs=jnp.mean(jnp.abs(out["motion"])),
                       centre_tap=jnp.mean(out["kernel"][..., out["kernel"].shape[-1] // 2]))
        return total, (metrics, model_state)

    def batch_spec(self, batch_size):
        return self.snippet_batch(batch_size, datasets.snippet_length(self.config.data),
                                  labels=False)

    def train_iterator(self, seed: int) -> Iterator[dict]:
        return data.train_iterator(self.config, seed, window=None, label_frame="annotated",
                                   batch_fn=transforms.frames_only)

    # ------------------------------------------------------------------ evaluation

    @functools.cached_property
    def _predict(self):
        @jax.jit
        def predict(params, model_state, inputs, target):
            out = self.model.apply({"params": params, **model_state}, inputs, target)
            image = jnp.clip(out["image"], 0.0, 1.0)
            copy = inputs[:, -1]
            scores = {"psnr": sdc_losses.psnr(image, target),
                      "l1": jnp.mean(jnp.abs(image - target), axis=(1, 2, 3)),
                      "copy_psnr": sdc_losses.psnr(copy, target),
                      "copy_l1": jnp.mean(jnp.abs(copy - target), axis=(1, 2, 3))}
            return scores, image, out["motion"]
        return predict

    def evaluate_windows(self, params: Any, model_state: dict, num_panels: int = 0
                         ) -> tuple[dict[str, float], list[dict[str, np.ndarray]]]:
        """(mean scores over every validation window, up to ``num_panels`` examples).

        Scores: ``psnr``/``l1`` of the model, ``copy_psnr``/``copy_l1`` of frame t as the
        guess; ``num_windows``. Each example holds frame_t, target, image, motion.
        """
        n = self.model.num_inputs
        sums: dict[str, float] = {}
        count = 0
        examples: list[dict[str, np.ndarray]] = []
        # Each process scores its rows of every global batch, on every device of the mesh;
        # the sums are pooled below.
        mesh = self.eval_mesh()
        params, model_state = sharding.to_mesh((params, model_state), mesh)
        for batch in data.eval_batches(self.config, window=None,
                                       batch_fn=transforms.frames_only_eval, per_process=True,
                                       mesh=mesh):
            # All rows (padding included) so every batch has one shape: one compilation.
            frames = batch["frames"]
            inputs, target = all_windows(frames, n)
            per = frames.shape[1] - n
            valid = np.repeat(np.asarray(batch["valid"]), per)
            scores, image, motion = sharding.rows_from_mesh(self._predict(
                params, model_state, *sharding.rows_to_mesh((inputs, target), mesh)), mesh)
            for k, v in scores.items():
                sums[k] = sums.get(k, 0.0) + float(np.sum(np.asarray(v)[valid]))
            count += int(valid.sum())
            # One example per snippet (its first window), until there are enough.
            for i in range(0, len(target), per):
                if len(examples) >= num_panels or not valid[i] or not files.is_writer():
                    break
                examples.append({"frame_t": inputs[i, -1], "target": target[i],
                                 "image": image[i], "motion": motion[i]})
        pooled = pooling.sum_over_processes(dict(sums, _count=count))
        count = int(pooled.pop("_count"))
        sums = {k: float(v) for k, v in pooled.items()}
        if not count:
            raise ValueError(f"config field eval.split: {self.config.eval.split!r} gave no "
                             f"snippets to evaluate")
        out = {k: v / count for k, v in sums.items()}
        out["num_windows"] = count
        return out, examples

    def evaluate(self, params, model_state, step) -> dict[str, float]:
        del step
        scores, _ = self.evaluate_windows(params, model_state)
        return {k: float(v) for k, v in scores.items() if k != "num_windows"}


def panel(example: dict[str, np.ndarray]) -> np.ndarray:
    """frame t | frame t+1 | synthesised / |error| x4 of SDC and of the copy | motion."""
    err = lambda a: np.clip(4.0 * np.mean(np.abs(a - example["target"]), -1), 0, 1)  # noqa: E731
    motion = example["motion"]
    peak = float(np.max(np.hypot(motion[..., 0], motion[..., 1])))
    tiles = [example["frame_t"], example["target"], example["image"],
             err(example["image"]), err(example["frame_t"]), viz.flow_to_color(motion)]
    titles = ["frame t", "frame t+1", "SDC synthesised", "|SDC error| x4",
              "|copy error| x4", f"motion t+1->t (max {peak:.1f}px)"]
    # Small working resolutions are enlarged (nearest) so pixels and titles stay legible;
    # make_panel sizes every tile like the first.
    scale = max(1, 256 // motion.shape[1])
    tiles[0] = np.repeat(np.repeat(viz.to_uint8_rgb(tiles[0]), scale, 0), scale, 1)
    return viz.make_panel(tiles, titles, ncols=3)


def report(config: ml_collections.ConfigDict, workdir: str,
           stages: Sequence[experiment.StageResult]) -> dict[str, Any]:
    """{"sdc": {"psnr", "l1"}, "copy": {"psnr", "l1"}} on ``eval.split`` (every window of
    every snippet), with the mode and the number of windows, and panels. The stage's
    folder holds the config ``load_sdc_flow`` rebuilds the model from, so the
    run can serve its motion to VPLR's propagation."""
    result = stages[-1]
    scores, examples = result.task.evaluate_windows(result.state.params,
                                                    result.state.model_state,
                                                    int(config.eval.num_panels))
    results = {"sdc": {"psnr": scores["psnr"], "l1": scores["l1"]},
               "copy": {"psnr": scores["copy_psnr"], "l1": scores["copy_l1"]},
               "mode": config.sdc.mode, "split": config.eval.split,
               "num_windows": int(scores["num_windows"]), "steps": result.step}
    for k, example in enumerate(examples):
        viz.save_png(os.path.join(workdir, "panels", f"sdc_{k:03d}.png"), panel(example))
    print(f"SDC ({config.sdc.mode}) on {config.data.name} {config.eval.split}, "
          f"{results['num_windows']} windows: PSNR {results['sdc']['psnr']:.2f} dB, "
          f"L1 {results['sdc']['l1']:.4f}; copy-last-frame PSNR {results['copy']['psnr']:.2f} "
          f"dB, L1 {results['copy']['l1']:.4f}")
    return results


# Beside an SDC stage's checkpoints: the stage's config (vsegjax.core.experiment);
# runs trained before the one runner have only their ``sdc`` block, in model.json.
CONFIG_FILES = ("config.json", "model.json")


def load_sdc_flow(workdir: str) -> SDCFlow:
    """``SDCFlow`` of a trained SDC run: ``workdir`` is the run's folder (with ``sdc/``) or
    its training folder (with ``checkpoints/`` and ``config.json``)."""
    root = files.resolve(workdir)
    # The runner's folder has a config.json too (the whole run's) but no checkpoints/.
    if not files.isdir(os.path.join(root, "checkpoints")):
        root = os.path.join(root, "sdc")
    found = [os.path.join(root, n) for n in CONFIG_FILES if files.isfile(os.path.join(root, n))]
    if not found:
        raise FileNotFoundError(f"SDC run {workdir!r}: no {' or '.join(CONFIG_FILES)} in it or "
                                f"in its sdc/ folder; train one with configs/sdc_synthetic.py")
    saved = json.loads(files.read_text(found[0]))
    if os.path.basename(found[0]) == "config.json":
        if "sdc" not in saved:
            raise ValueError(f"{found[0]}: not the config of an SDC run (no 'sdc' block)")
        saved = saved["sdc"]
    model = make_sdc_model(core_config.resolve(saved, sdc_config()))
    state = checkpoint.load_state_tree(root)
    return SDCFlow(model, {"params": state["params"], **state.get("model_state", {})})
