"""Flow on real data: any flow function and the OpenCV baselines on Sintel / FlyingChairs.

``evaluate`` gives the end-point error of every pair (all pixels, and non-occluded where
the data marks occlusion) for each flow function, and the means over pairs; ``resized``
computes a flow at reduced size and scales it back to full resolution (the EPE is always
measured at the ground truth's resolution). The command that scores a trained EFC run
this way is ``python -m vsegjax.methods.efc.flow_real``.
"""

from __future__ import annotations

import pathlib
from typing import Callable, Iterator

import cv2
import numpy as np
import tqdm

from vsegjax.data import flow_files
from vsegjax.evaluation.flow import FlowErrorAccumulator, flow_error_sums, metrics_from_sums
from vsegjax.models.flow_providers import OpenCVFlow

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # uint8 frames -> flow [H, W, 2]


def real_pairs(sintel: str | None, chairs: str | None) -> Iterator[tuple[str, dict]]:
    """(name, snippet dict with 2 frames and the pair's ground truth) of every sample pair."""
    def report(key, error):
        raise error
    specs = []
    if sintel:
        for pass_name in ("clean", "final"):
            specs += flow_files.find_sintel(pathlib.Path(sintel), pass_name, 2, 1,
                                               report).get("train", [])
    if chairs:
        for split in flow_files.find_flying_chairs(pathlib.Path(chairs), report).values():
            specs += split
    seen = set()
    for spec in specs:
        if spec.key in seen or not spec.pairs or spec.pairs[0] is None:
            continue
        seen.add(spec.key)
        yield spec.key, flow_files.load_snippet(spec)


def resized(fn: FlowFn, max_side: int | None) -> FlowFn:
    """``fn`` run on frames scaled to ``max_side`` and its flow scaled back."""
    if not max_side:
        return fn

    def wrapped(a, b):
        h, w = a.shape[:2]
        s = min(1.0, max_side / max(h, w))
        if s == 1.0:
            return fn(a, b)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        small = fn(cv2.resize(a, size, interpolation=cv2.INTER_AREA),
                   cv2.resize(b, size, interpolation=cv2.INTER_AREA))
        flow = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        return flow * np.asarray([w / size[0], h / size[1]], np.float32)
    return wrapped


def baseline_fns() -> dict[str, FlowFn]:
    out = {"zero": lambda a, b: np.zeros(a.shape[:2] + (2,), np.float32)}
    for method in ("farneback", "dis"):
        provider = OpenCVFlow(method)
        out[method] = lambda a, b, p=provider: np.asarray(
            p.flows(np.stack([a, b])[None], need="fwd")[0])[0, 0]
    return out


def evaluate(fns: dict[str, FlowFn], pairs, max_side: int | None = None) -> dict:
    """{"pairs": {name: {method: {epe_all, epe_noc}}}, "mean": {method: {...}}}."""
    fns = {k: resized(f, max_side) for k, f in fns.items()}
    per_pair: dict[str, dict] = {}
    totals = {k: FlowErrorAccumulator() for k in fns}
    for name, ex in tqdm.tqdm(list(pairs), desc="flow on real pairs", unit="pair"):
        a, b = ex["frames"][0], ex["frames"][1]
        gt = ex["flow_fwd"][0]
        valid = ex.get("flow_valid", np.ones((1,) + gt.shape[:2], np.uint8))[0]
        occ = ex.get("occ_fwd", np.zeros((1,) + gt.shape[:2], np.uint8))[0]
        per_pair[name] = {}
        for method, fn in fns.items():
            sums = flow_error_sums(fn(a, b), gt, valid, occ)
            totals[method].add_sums(sums)
            scores = metrics_from_sums({k: np.float64(v) for k, v in sums.items()})
            per_pair[name][method] = {k: float(scores[k]) for k in ("epe_all", "epe_noc")}
    # Mean over pairs (each pair counts once, as in per-sequence tables).
    mean = {m: {k: float(np.mean([p[m][k] for p in per_pair.values()]))
                for k in ("epe_all", "epe_noc")} for m in fns}
    return {"pairs": per_pair, "mean": mean}


def format_table(result: dict) -> str:
    methods = list(result["mean"])
    head = f"{'pair':40s}" + "".join(f"{m:>12s}" for m in methods)
    rows = [head, "EPE (all pixels)"]
    for name, scores in result["pairs"].items():
        rows.append(f"{name[:40]:40s}" + "".join(f"{scores[m]['epe_all']:12.3f}" for m in methods))
    rows.append(f"{'mean':40s}" + "".join(f"{result['mean'][m]['epe_all']:12.3f}"
                                          for m in methods))
    rows.append(f"{'mean (non-occluded)':40s}" + "".join(
        f"{result['mean'][m]['epe_noc']:12.3f}" for m in methods))
    return "\n".join(rows)
