"""EFC evaluation: segmentation mIoU against the static baseline, flow EPE against baselines.

On the validation split (at the working resolution): mIoU of the EFC segmentation branch
and of the static segmenter on each snippet's labelled frame; EPE (all / non-occluded
pixels) and Fl of the learned flow, the zero flow and OpenCV Farneback on every pair of
consecutive frames against the dataset's flow. Writes ``<workdir>/eval_metrics.json``:

    {"efc": {"miou", "epe_all", "epe_noc", "fl_all"}, "static": {"miou"},
     "flow_baselines": {"zero": {...}, "farneback": {...}}, ...}

and ``<workdir>/panels/example_<index>.png``: frames t and t+1, predicted and true flow in
colour (one colour scale per panel), estimated occlusion, EFC / static segmentation and
the ground truth.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
import tqdm

from vsegjax import evaluation, files, viz
from vsegjax.data import datasets
from vsegjax.evaluation import pooling
from vsegjax.models.flow_providers import OpenCVFlow
from vsegjax.core import inputs as data
from vsegjax.core import experiment
from vsegjax.core import sharding
from vsegjax.methods.efc.task import EFCTask, consecutive_pairs

FLOW_KEYS = ("epe_all", "epe_noc", "fl_all")


def _flow_scores(acc: evaluation.FlowErrorAccumulator) -> dict[str, float]:
    return {k: v for k, v in acc.compute().items() if k in FLOW_KEYS}


def report(config: ml_collections.ConfigDict, workdir: str,
           stages: Sequence[experiment.StageResult]) -> dict[str, Any]:
    """The runner's report: the EFC stage against the last static stage, if any
    (``static_continued`` when enabled: the segmenter EFC started from, trained on)."""
    joint = stages[-1]
    static = experiment.find_stage(stages, "static")
    return evaluate(config, workdir, joint.task, joint.state,
                    static.state if static else None, static.task if static else None)


def evaluate(config: ml_collections.ConfigDict, workdir: str, task: EFCTask,
             efc_state: Any, static_state: Any | None,
             static_task: Any | None = None) -> dict[str, Any]:
    """Scores EFC, the static baseline and the flow baselines (the results for
    ``eval_metrics.json``); writes the panels."""
    c = config.model.num_classes
    palette = viz.palette_for(datasets.palette_name(config.data))
    segments = not task.flow_only
    cms = evaluation.ConfusionMatrices(c, ["efc", "static"])
    flows = {m: evaluation.FlowErrorAccumulator() for m in ("efc", "zero", "farneback")}
    use_farneback = bool(config.eval.farneback)
    farneback = OpenCVFlow("farneback") if use_farneback else None
    mesh = task.eval_mesh()  # each device predicts its rows of the global batch
    efc_params, efc_model_state = sharding.to_mesh((efc_state.params, efc_state.model_state),
                                                   mesh)
    efc_vars = task.inference_variables(efc_params, efc_model_state) if segments else None
    if static_state is not None:
        static_vars = sharding.to_mesh((static_state.params, static_state.model_state), mesh)
    shown, num_panels = 0, int(config.eval.num_panels)
    has_gt_flow = False
    total = data.num_eval_snippets(config)
    bar = tqdm.tqdm(total=total if jax.process_count() == 1 else None, desc="EFC evaluation",
                    unit="snippet", disable=not files.is_writer())
    # Each process evaluates its rows of every global batch; process 0 draws the panels.
    evaluated = 0
    for batch in data.eval_batches(config, window=None, per_process=True, mesh=mesh):
        v = batch["valid"]
        rows = np.arange(len(v))
        pos = batch["label_pos"]
        frames = batch["frames"][rows, pos]
        labels = batch["labels"][rows, pos]
        pred = {}
        if segments:
            placed = sharding.rows_to_mesh(frames, mesh)
            pred["efc"] = task._predict(efc_vars, placed)
            if static_state is not None:
                pred["static"] = static_task._predict(*static_vars, placed)
            pred = sharding.rows_from_mesh(pred, mesh)
            for m, p in pred.items():
                cms.add(m, p, labels, v)
        if "flow_fwd" in batch:
            has_gt_flow = True
        if "flow_fwd" in batch and v.any():
            # Every row's pairs (padding too: one shape over the mesh), scored where valid.
            f1, f2, gt, occ = consecutive_pairs(dict(batch, valid=np.ones_like(v)))
            flow, occ_est = sharding.rows_from_mesh(task._flow(
                efc_params, efc_model_state, *sharding.rows_to_mesh((f1, f2), mesh)), mesh)
            per_snippet = batch["frames"].shape[1] - 1
            keep = np.repeat(v, per_snippet)
            gt_v, occ_v = gt[keep], None if occ is None else occ[keep]
            flows["efc"].update(flow[keep], gt_v, None, occ_v)
            flows["zero"].update(np.zeros_like(gt_v), gt_v, None, occ_v)
            if farneback is not None:
                fb, _ = farneback.flows(np.stack([f1[keep], f2[keep]], axis=1), need="fwd")
                flows["farneback"].update(np.asarray(fb)[:, 0], gt_v, None, occ_v)
            for i in np.flatnonzero(v):
                if shown >= num_panels or not files.is_writer():
                    break
                k = i * per_snippet + min(int(pos[i]), per_snippet - 1)  # the labelled pair
                _panel(workdir, shown, f1[k], f2[k], flow[k], gt[k], occ_est[k],
                       {m: p[i] for m, p in pred.items()}, labels[i], palette)
                shown += 1
        bar.update(int(v.sum()))
        evaluated += int(v.sum())
    bar.close()
    cms = cms.pooled()
    for acc in flows.values():
        acc.sums = {k: float(x) for k, x in pooling.sum_over_processes(acc.sums).items()}

    results: dict[str, Any] = {"efc": {}, "split": config.eval.split,
                               "variant": config.variant}
    if segments:
        results["efc"]["miou"] = cms.miou("efc")
        if static_state is not None:
            results["static"] = {"miou": cms.miou("static")}
    if has_gt_flow:
        results["efc"].update(_flow_scores(flows["efc"]))
        results["flow_baselines"] = {"zero": _flow_scores(flows["zero"])}
        if farneback is not None:
            results["flow_baselines"]["farneback"] = _flow_scores(flows["farneback"])
    results["resolution"] = list(frames.shape[1:3])
    results["snippets_per_process"] = pooling.per_process(evaluated)
    print(summary(results))
    return results


def summary(results: dict[str, Any]) -> str:
    """One line per method with its scores."""
    lines = []
    for name, scores in [("efc", results.get("efc", {})),
                         ("static", results.get("static", {}))] + \
            [(f"flow:{k}", v) for k, v in results.get("flow_baselines", {}).items()]:
        if scores:
            lines.append(f"  {name:16s} " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    return "EFC evaluation (" + str(results.get("split")) + "):\n" + "\n".join(lines)


def _panel(workdir: str, index: int, frame1, frame2, flow, gt, occ, preds: dict, label,
           palette) -> None:
    scale = max(float(np.max(np.linalg.norm(gt, axis=-1))), 1e-3)
    tiles = [viz.to_uint8_rgb(frame1), viz.to_uint8_rgb(frame2),
             viz.flow_to_color(flow, max_flow=scale), viz.flow_to_color(gt, max_flow=scale),
             viz.to_uint8_rgb(np.repeat(occ[..., None], 3, -1))]
    titles = ["frame t", "frame t+1", "EFC flow", "true flow", "EFC occlusion"]
    for m, p in preds.items():
        tiles.append(viz.colorize_labels(p, palette))
        titles.append(f"{m} segmentation")
    tiles.append(viz.colorize_labels(label, palette))
    titles.append("ground truth")
    panel = viz.make_panel(tiles, titles, ncols=4)
    viz.save_png(os.path.join(workdir, "panels", f"example_{index:03d}.png"), panel)
