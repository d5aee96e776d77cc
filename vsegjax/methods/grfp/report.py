"""GRFP evaluation: static vs GRFP forward vs GRFP forward-backward.

Class mIoU (and per-class IoU) on the labelled frame of every validation snippet, and
temporal consistency over whole snippets (trajectories chained through the dataset's
flow when it has one). Writes ``<workdir>/eval_metrics.json`` and a PNG panel per
example like Figs. 3-4 of the GRFP paper.
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from vsegjax import evaluation, files, viz
from vsegjax.data import datasets
from vsegjax.evaluation import pooling
from vsegjax.core import inputs as data
from vsegjax.core import experiment
from vsegjax.core import sharding
from vsegjax.models.segmenter import StaticModel, apply_static

METHODS = ("static", "grfp", "grfp_fwbw")


def _fuse(fusion: dict, log_fwd: jax.Array, log_bwd: jax.Array) -> jax.Array:
    """The GRFP module's 1x1 fusion conv applied to whole sequences."""
    x = jnp.concatenate([log_fwd, log_bwd], axis=-1)
    kernel = fusion["kernel"][0, 0]
    return jax.nn.log_softmax(x @ kernel + fusion["bias"], axis=-1)


class Predictor:
    """Jitted predictions of the three methods for a window batch: ``place`` puts this
    process' rows on every device of the mesh, the methods return its rows as numpy."""

    def __init__(self, task, video_state, static_state):
        self.task = task
        self.mesh = task.eval_mesh()
        (self.vparams, self.vstate, self.sparams, self.sstate) = sharding.to_mesh(
            (video_state.params, video_state.model_state, static_state.params,
             static_state.model_state), self.mesh)
        self.static_model = StaticModel(static=task.model.static)
        self.mode = task.config.grfp.mode

    @functools.cached_property
    def _static(self):
        def fn(params, state, frames):
            b, t = frames.shape[:2]
            logits, _ = apply_static(self.static_model, params, state,
                                     frames.reshape((b * t,) + frames.shape[2:]), False)
            return jnp.argmax(logits, -1).reshape((b, t) + frames.shape[2:4])
        return jax.jit(fn)

    def _video(self, label_pos: int):
        @jax.jit
        def fn(params, state, frames, flow_fwd, flow_bwd):
            return self.task.model.apply({"params": params, **state}, frames, flow_fwd, flow_bwd,
                                         label_pos)
        return fn

    @functools.cached_property
    def _flows(self):
        model = self.task.model
        return jax.jit(lambda p, s, frames: model.apply({"params": p, **s}, frames,
                                                        method=type(model).compute_flows))

    @functools.cached_property
    def _at_label(self):
        return self._video(self.task.before)

    @functools.cached_property
    def _last(self):
        return self._video(self.task.window_len - 1)

    @functools.cached_property
    def _first(self):
        return self._video(0)

    @functools.lru_cache(maxsize=None)
    def _window_fn(self, length: int):
        return self._video(length - 1)

    def place(self, batch: dict) -> dict[str, jax.Array]:
        """The model's inputs among this process' rows, as global arrays on the mesh."""
        return sharding.rows_to_mesh({k: batch[k] for k in ("frames", "flow_fwd", "flow_bwd")
                                      if batch.get(k) is not None}, self.mesh)

    def forward_with_length(self, placed: dict, length: int) -> np.ndarray:
        """GRFP forward prediction at the labelled frame from its last ``length`` frames
        (``length`` 1 is the static prediction; the paper's Table 3 varies this)."""
        lp = self.task.before
        lo = lp - length + 1
        flows = [None if placed.get(k) is None else placed[k][:, lo:lp]
                 for k in ("flow_fwd", "flow_bwd")]
        out = self._window_fn(length)(self.vparams, self.vstate, placed["frames"][:, lo:lp + 1],
                                      *flows)
        return sharding.rows_from_mesh(jnp.argmax(out.get("logits_fwd", out["logits"]), -1),
                                       self.mesh)

    def __call__(self, placed: dict) -> dict[str, np.ndarray]:
        args = (placed["frames"], placed.get("flow_fwd"), placed.get("flow_bwd"))
        lp = self.task.before
        out = {"static_seq": self._static(self.sparams, self.sstate, placed["frames"])}
        at = self._at_label(self.vparams, self.vstate, *args)
        fwd_key = "logits_fwd" if "logits_fwd" in at else "logits"
        out["grfp"] = jnp.argmax(at[fwd_key], -1)
        out["grfp_fwbw"] = jnp.argmax(at["logits"], -1)
        out["gate"] = at["r"][:, lp, ..., 0]
        # Whole-snippet sequences for temporal consistency: the forward pass to the last
        # frame, and (fwbw) the backward pass to the first frame, fused frame by frame.
        last = self._last(self.vparams, self.vstate, *args)
        if self.mode == "backward":  # the backward pass reaches every frame from the end
            last = self._first(self.vparams, self.vstate, *args)
        out["grfp_seq"] = jnp.argmax(last["seq_logits"], -1)
        if self.task.model.flow is not None:  # learned flow: the model's own, for the metrics
            out["flow_fwd"], out["flow_bwd"] = self._flows(self.vparams, self.vstate,
                                                           placed["frames"])
        if self.mode == "fwbw":
            first = self._first(self.vparams, self.vstate, *args)
            fused = _fuse(self.vparams["grfp"]["fusion"], last["seq_logits"],
                          first["seq_logits_bwd"])
            out["grfp_fwbw_seq"] = jnp.argmax(fused, -1)
        out = sharding.rows_from_mesh(out, self.mesh)
        out.setdefault("grfp_fwbw_seq", out["grfp_seq"])
        out["static"] = out["static_seq"][:, lp]
        return out


def carry_label(prev: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Label map ``prev`` [H, W] of frame t-1 carried into frame t along ``flow`` [H, W, 2]
    (t -> t-1, nearest pixel); 255 (ignored) where the flow leaves the image."""
    h, w = prev.shape
    x = np.rint(np.arange(w)[None, :] + flow[..., 0]).astype(np.int64)
    y = np.rint(np.arange(h)[:, None] + flow[..., 1]).astype(np.int64)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    return np.where(inside, prev[np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)], 255).astype(
        prev.dtype)


def _first_present(dicts, keys):
    for key in keys:
        for d in dicts:
            if d.get(key) is not None:
                return d[key]
    return None


def _panel(batch: dict, i: int, preds: dict, lp: int, palette: np.ndarray,
           mode: str = "fwbw") -> np.ndarray:
    frame = (batch["frames"][i, lp] * 255).astype(np.uint8)
    # Tiles are drawn at least 256 px wide (make_panel sizes every tile like the first).
    up = max(1, 256 // frame.shape[1])
    frame = np.repeat(np.repeat(frame, up, 0), up, 1)
    flows = _first_present((batch, preds), ("flow_bwd",))
    flow = flows[i, lp - 1] if lp > 0 and flows is not None else \
        np.zeros(frame.shape[:2] + (2,), np.float32)
    tiles = [frame, viz.colorize_labels(preds["static"][i], palette),
             viz.colorize_labels(preds["grfp_fwbw"][i], palette),
             viz.colorize_labels(batch["labels"][i, lp], palette),
             viz.flow_to_color(flow), viz.gate_to_color(preds["gate"][i])]
    titles = ["frame", "static", f"GRFP {mode}", "ground truth", f"flow {lp}->{lp - 1}",
              "gate r_t"]
    return viz.make_panel(tiles, titles, ncols=3)


def report(config: ml_collections.ConfigDict, workdir: str,
           stages: Sequence[experiment.StageResult]) -> dict[str, Any]:
    """The runner's report: the GRFP stage against the static stage it started from."""
    video = stages[-1]
    static = experiment.find_stage(stages, "static")
    if static is not None:
        return evaluate(config, workdir, video.task, video.state, static.state)
    if config.grfp.train_static:
        raise ValueError("config field stages: GRFP's report compares with a 'static' "
                         "stage, and the config has none (with grfp.train_static the video "
                         "model's static net is no longer the baseline)")
    # The static stage ran in another run (e.g. a second seed of the GRFP stage started
    # from it): the frozen static net inside the video model is that baseline, unchanged.
    return evaluate(config, workdir, video.task, video.state, frozen_static_state(video.state))


class _StaticState(NamedTuple):
    params: dict
    model_state: dict


def frozen_static_state(video_state) -> _StaticState:
    """The static net's variables inside a video model's state, as a static stage's."""
    return _StaticState(
        {"static": video_state.params["static"]},
        {name: {"static": tree["static"]} for name, tree in video_state.model_state.items()
         if "static" in tree})


def evaluate(config: ml_collections.ConfigDict, workdir: str, task, video_state,
             static_state) -> dict[str, Any]:
    """Runs the comparison (the results for ``eval_metrics.json``) and writes
    ``panels/*.png``."""
    c = config.model.num_classes
    lp = task.before
    predictor = Predictor(task, video_state, static_state)
    palette = viz.palette_for(datasets.palette_name(config.data))
    # Keys: a method; (method, "degraded") on degraded labelled frames; ("T", n) for the
    # forward model after n frames.
    lengths = range(1, lp + 2) if config.grfp.mode != "backward" else ()
    # Every process holds every key (pooled by name below), even one with no valid row.
    # ("carried", ...): where frame t-1 is labelled too, its label copied or carried along
    # the flow the STGRU uses, scored on frame t: how good that flow is on this data.
    cms = evaluation.ConfusionMatrices(c, [*METHODS, *((m, "degraded") for m in METHODS),
                                           *(("T", n) for n in lengths),
                                           ("carried", "copy"), ("carried", "flow")])
    num_carried = 0
    consistency = {m: [] for m in METHODS}
    panel_dir = os.path.join(workdir, "panels")
    num_panels, index = config.eval.num_panels, 0
    total = data.num_eval_snippets(config)
    bar = tqdm.tqdm(total=total if jax.process_count() == 1 else None, desc="evaluate GRFP",
                    unit="snippet", disable=not files.is_writer())
    # Each process evaluates its rows of every global batch; process 0 draws the panels.
    for batch in data.eval_batches(config, (task.before, task.after), batch_fn=task.batch_fn,
                                   per_process=True, mesh=predictor.mesh):
        placed = predictor.place(batch)
        preds = predictor(placed)
        by_length = {n: predictor.forward_with_length(placed, n) for n in lengths}
        # Trajectories follow the dataset's exact flow when it has one, else the flow used.
        gt_fwd, gt_bwd = (_first_present((batch, preds), (f"{k}_gt", k))
                          for k in ("flow_fwd", "flow_bwd"))
        for i in np.flatnonzero(batch["valid"]):
            label = batch["labels"][i, lp]
            degraded = "degraded" in batch and batch["degraded"][i, lp] > 0
            for m in METHODS:
                cm = cms.add(m, preds[m][i], label)
                if degraded:
                    cms.add_counts((m, "degraded"), cm)
            for n in lengths:
                cms.add(("T", n), by_length[n][i], label)
            used_bwd = _first_present((batch, preds), ("flow_bwd",))
            if lp > 0 and used_bwd is not None and batch.get("has_label") is not None \
                    and batch["has_label"][i, lp - 1]:
                prev = batch["labels"][i, lp - 1]
                cms.add(("carried", "copy"), prev, label)
                cms.add(("carried", "flow"), carry_label(prev, np.asarray(used_bwd[i, lp - 1])),
                        label)
                num_carried += 1
            seqs = {"static": preds["static_seq"][i], "grfp": preds["grfp_seq"][i],
                    "grfp_fwbw": preds["grfp_fwbw_seq"][i]}
            for m in METHODS:
                consistency[m].append(evaluation.temporal_consistency(
                    seqs[m], gt_fwd[i], gt_bwd[i]))
            if files.is_writer() and index < num_panels:
                viz.save_png(os.path.join(panel_dir, f"example_{index:03d}.png"),
                             _panel(batch, i, preds, lp, palette, config.grfp.mode))
            index += 1
            bar.update(1)
    bar.close()
    cms = cms.pooled()
    per_process = pooling.per_process(index)
    tc_counts = pooling.sum_over_processes(
        {f"{m}/{k}": np.asarray(getattr(evaluation.combine_consistency(consistency[m]), k))
         for m in METHODS for k in ("consistent", "total")})

    names = list(config.data.class_names) or [str(k) for k in range(c)]
    results: dict[str, Any] = {}
    for m in METHODS:
        miou_deg = cms.miou((m, "degraded"))
        total = int(tc_counts[f"{m}/total"])
        tc_ratio = int(tc_counts[f"{m}/consistent"]) / total if total else float("nan")
        results[m] = {
            "miou": cms.miou(m),
            "temporal_consistency": float(tc_ratio),
            "per_class_iou": cms.per_class(m, names),
            "miou_degraded_labelled_frames": None if np.isnan(miou_deg) else miou_deg,
        }
    # GRFP forward mIoU against the number of frames T seen at inference (T = 1: static).
    results["grfp_miou_by_num_frames"] = {
        str(n): cms.miou(("T", n)) for n in lengths}
    carried = {k: cms.miou(("carried", k)) for k in ("copy", "flow")}
    results["label_carried_one_frame"] = {
        **{k: None if np.isnan(v) else v for k, v in carried.items()},
        "num_snippets": int(sum(pooling.per_process(num_carried)))}
    results["num_snippets"] = int(sum(per_process))
    results["snippets_per_process"] = per_process
    results["flow_source"] = config.flow.source
    summary = "  ".join(f"{m}: mIoU {results[m]['miou']:.4f} TC {results[m]['temporal_consistency']:.4f}"
                        for m in METHODS)
    print(f"GRFP evaluation on {results['num_snippets']} snippets ({config.flow.source} flow): {summary}")
    print("GRFP forward mIoU by frames seen: " + "  ".join(
        f"T={n}: {v:.4f}" for n, v in results["grfp_miou_by_num_frames"].items()))
    lc = results["label_carried_one_frame"]
    if lc["num_snippets"]:
        print(f"label of frame t-1 scored on frame t ({lc['num_snippets']} snippets): copied "
              f"mIoU {lc['copy']:.4f}, carried along the {config.flow.source} flow "
              f"{lc['flow']:.4f}")
    print(f"wrote {min(index, num_panels)} panels in {panel_dir}")
    return results
