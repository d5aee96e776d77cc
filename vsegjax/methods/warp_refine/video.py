"""Warp-Refine on one video: train the refiner on its own frames, then label every frame.

This is what ``vsegjax.autolabel --method=warp_refine`` and the DAVIS propagation
evaluation run. The video's sparse labels are the only supervision: the prior segmenter
learns from the labelled frames (L_prior) and the refiner from cycles that start at them
(L_cycle), both through the shared trainer (checkpoints in ``workdir``, so an interrupted
run resumes). Frames are floats in [0, 1] at the working resolution.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vsegjax import files
from vsegjax.models import propagate as prop
from vsegjax.ops import compose_flow
from vsegjax.core import checkpoint
from vsegjax.core import config as core_config
from vsegjax.core.trainer import train
from vsegjax.methods.warp_refine.task import IGNORE_LABEL, WarpRefineTask


def video_config(num_classes: int, crop: tuple[int, int], steps: int, k: int = 3,
                 batch_size: int = 2, seed: int = 0, prior: str = "segmenter",
                 strides: Sequence[int] = (1,), warp_weight: float = 0.0
                 ) -> ml_collections.ConfigDict:
    """A small refiner + prior for one video (CPU-sized: a few hundred steps).

    ``prior``: "segmenter" trains a prior on the video's labelled frames with the refiner;
    "none" gives the refiner a uniform prior (``task.make_model``).
    ``strides``: frame steps a training cycle may take (``VideoWindows``).
    ``warp_weight``: weight of L_warp, the pull towards plain soft warping."""
    return ml_collections.ConfigDict(dict(
        seed=seed, mesh=dict(num_devices=1),
        model=dict(backbone="small", head="simple", num_classes=int(num_classes),
                   output_stride=8, width=32, dtype="float32"),
        input=dict(batch_size=batch_size, augment=dict(crop_size=tuple(crop))),
        warp_refine=dict(k=k, refiner_width=24, refiner_depth=2, prior=prior,
                         strides=[int(x) for x in strides],
                         loss_weights=dict(L_cycle=1.0, L_direct=1.0, L_prior=1.0,
                                           L_warp=float(warp_weight))),
        train=dict(num_steps=int(steps), log_every=25, checkpoint_every=max(50, steps // 4),
                   eval_every=0, keep_checkpoints=1, init_from="", async_checkpoints=False,
                   report_every_secs=60.0),
        optimizer=dict(name="adam", learning_rate=1e-3, schedule="cosine", warmup_steps=20,
                       weight_decay=0.0)))


class VideoWindows:
    """Checkpointable iterator of cycle windows cut from one in-memory video.

    Each example: a labelled frame, a direction and a stride s (from ``strides``) with
    ``k`` steps of room (``k`` is cut to what the video allows), frames a, a +- s, ...,
    the same random crop of frames, labels and the flows between them (the video's
    step flows composed over s frames). Strides above 1 let cycles from one labelled
    frame reach frames up to ``k * max(strides)`` away; s = 1 gives consecutive frames.
    State = the batch count, so a resumed run draws the same batches.
    """

    def __init__(self, frames: np.ndarray, labels: Mapping[int, np.ndarray],
                 flows: tuple[np.ndarray, np.ndarray], k: int, batch_size: int,
                 crop: tuple[int, int], seed: int = 0, strides: Sequence[int] = (1,)):
        self.frames = np.asarray(frames, np.float32)
        self.labels = {int(t): np.asarray(l) for t, l in labels.items()}
        fwd, bwd = (np.asarray(f, np.float32) for f in flows)
        t = len(self.frames)
        self.k = max(1, min(int(k), t - 1))
        if not strides or any(int(s_) < 1 for s_ in strides):
            raise ValueError(f"warp_refine.strides must be positive integers; got {strides}")
        # (anchor, direction, stride) triples with room for k steps.
        self.windows = [(a, d, int(s_)) for a in sorted(self.labels) for s_ in strides
                        for d in (1, -1) if 0 <= a + d * int(s_) * self.k < t]
        if not self.windows:
            raise ValueError(f"no labelled frame has {self.k} frames on either side in a "
                             f"video of {t} frames")
        self.flows = {s_: _strided_flows(fwd, bwd, s_) for s_ in {w[2] for w in self.windows}}
        # anchor -> direction -> strides, built once (drawn from in that order).
        self.choices: dict[int, dict[int, list[int]]] = {}
        for a, d, s_ in self.windows:
            self.choices.setdefault(a, {}).setdefault(d, []).append(s_)
        self.batch_size, self.seed, self.count = int(batch_size), int(seed), 0
        h, w = self.frames.shape[1:3]
        self.crop = (min(int(crop[0]), h), min(int(crop[1]), w))

    def __iter__(self) -> "VideoWindows":
        return self

    def _example(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        # Anchor, then direction, then stride: with strides (1,) the same draws as before
        # strides existed, so earlier runs reproduce.
        a = int(rng.choice(sorted(self.choices)))
        d = int(rng.choice([d for d in (1, -1) if d in self.choices[a]]))
        options = self.choices[a][d]
        stride = options[0] if len(options) == 1 else int(rng.choice(options))
        idx = np.arange(a, a + d * stride * (self.k + 1), d * stride)
        lab = np.full((len(idx),) + self.frames.shape[1:3], IGNORE_LABEL, np.uint8)
        for j, f in enumerate(idx):
            if int(f) in self.labels:
                lab[j] = self.labels[int(f)]
        ahead, back = self.flows[stride]  # p -> p + s and p + s -> p, at index p
        if d == 1:  # window frame j -> j+1 is video frame idx[j] -> idx[j] + s
            fwd, bwd = ahead[idx[:-1]], back[idx[:-1]]
        else:       # window frame j -> j+1 is video frame idx[j] -> idx[j] - s
            fwd, bwd = back[idx[1:]], ahead[idx[1:]]
        h, w = self.frames.shape[1:3]
        y = int(rng.integers(0, h - self.crop[0] + 1))
        x = int(rng.integers(0, w - self.crop[1] + 1))
        sl = (slice(None), slice(y, y + self.crop[0]), slice(x, x + self.crop[1]))
        return {"frames": self.frames[idx][sl], "labels": lab[sl], "flow_fwd": fwd[sl],
                "flow_bwd": bwd[sl]}

    def __next__(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.count])
        self.count += 1
        rows = [self._example(rng) for _ in range(self.batch_size)]
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}

    def get_state(self) -> dict[str, int]:
        return {"count": self.count}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.count = int(state["count"])


_compose = jax.jit(compose_flow)


def _strided_flows(fwd: np.ndarray, bwd: np.ndarray, stride: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(F_{p -> p+s}, F_{p+s -> p}) for every p, from step flows fwd[p]: p -> p+1 and
    bwd[p]: p+1 -> p, by composing s steps (``compose_flow(x -> y, y -> z) = x -> z``)."""
    if stride == 1:
        return fwd, bwd
    n = len(fwd) + 1 - stride
    ahead, back = [], []
    for p in range(max(n, 0)):
        acc_f = jnp.asarray(fwd[p + stride - 1])      # p+s-1 -> p+s
        acc_b = jnp.asarray(bwd[p])                   # p+1 -> p
        for j in range(1, stride):
            acc_f = _compose(jnp.asarray(fwd[p + stride - 1 - j]), acc_f)
            acc_b = _compose(jnp.asarray(bwd[p + j]), acc_b)
        ahead.append(np.asarray(acc_f))
        back.append(np.asarray(acc_b))
    shape = (0,) + fwd.shape[1:]
    return (np.stack(ahead) if ahead else np.zeros(shape, np.float32),
            np.stack(back) if back else np.zeros(shape, np.float32))


class _VideoTask(WarpRefineTask):
    def __init__(self, config: ml_collections.ConfigDict, windows: VideoWindows):
        super().__init__(config)
        self.windows = windows

    def train_iterator(self, seed):
        del seed
        return self.windows


def train_on_video(frames: np.ndarray, labels: Mapping[int, np.ndarray], num_classes: int,
                   flows: tuple[np.ndarray, np.ndarray], workdir: str, steps: int = 300,
                   k: int = 3, crop: tuple[int, int] = (128, 128), seed: int = 0,
                   config: ml_collections.ConfigDict | None = None, prior: str = "segmenter",
                   strides: Sequence[int] = (1,), warp_weight: float = 0.0,
                   flow_name: str = "") -> tuple[WarpRefineTask, dict]:
    """Trains prior + refiner on one video's sparse labels; (task, variables).

    ``<workdir>/refiner`` records what it was trained on (``flow_name`` names the flow
    among it); a second call with the same workdir resumes it only for the same frames,
    labels, flow and settings (``check_refiner_reuse``)."""

    h, w = np.asarray(frames).shape[1:3]
    crop = (min(crop[0], h), min(crop[1], w))
    cfg = config or video_config(num_classes, crop, steps, k, seed=seed, prior=prior,
                                 strides=strides, warp_weight=warp_weight)
    # The fingerprint is of ``cfg`` as given; the windows read it resolved.
    resolved = core_config.resolve(cfg, _VideoTask.config_template())
    windows = VideoWindows(frames, labels, flows, int(resolved.warp_refine.k),
                           int(resolved.input.batch_size),
                           tuple(resolved.input.augment.crop_size), seed,
                           strides=tuple(resolved.warp_refine.strides))
    task = _VideoTask(cfg, windows)
    run_dir = os.path.join(workdir, "refiner")
    check_refiner_reuse(run_dir, training_fingerprint(frames, labels, cfg, flow_name))
    result = train(cfg, run_dir, task)
    # What --refiner=<run_dir> needs to rebuild the model (the trainer saves only arrays).
    files.atomic_write_text(os.path.join(run_dir, "config.json"), cfg.to_json(indent=2))
    return task, {"params": result.state.params, **result.state.model_state}


FINGERPRINT_FILE = "trained_on.json"


class RefinerMismatch(ValueError):
    """A refiner folder holds a model trained on something else; the message says what."""


def training_fingerprint(frames: np.ndarray, labels: Mapping[int, np.ndarray],
                         cfg: ml_collections.ConfigDict, flow_name: str = "") -> dict[str, Any]:
    """What a refiner trained by ``train_on_video`` depends on: the frames and labels it
    saw (hashed) and its config except the step count (more steps resume the same run)."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(frames, np.float32).tobytes())
    for t in sorted(labels):
        digest.update(np.int64(t).tobytes())
        digest.update(np.ascontiguousarray(labels[t], np.uint8).tobytes())
    settings = json.loads(cfg.to_json())
    settings.get("train", {}).pop("num_steps", None)
    return {"frames": int(len(frames)), "labelled": sorted(int(t) for t in labels),
            "data_sha256": digest.hexdigest(), "flow": flow_name, "config": settings}


def check_refiner_reuse(run_dir: str, fingerprint: dict[str, Any]) -> None:
    """Records what the refiner in ``run_dir`` is trained on; a ``run_dir`` that already
    holds a refiner of other frames, labels or settings is refused (resuming it would
    silently reuse the wrong model)."""
    path = pathlib.Path(run_dir) / FINGERPRINT_FILE
    if (pathlib.Path(run_dir) / "checkpoints").is_dir():
        if not path.is_file():
            raise RefinerMismatch(f"{run_dir} holds a refiner with no record of what it was "
                                  f"trained on ({FINGERPRINT_FILE}); choose another --out, or "
                                  f"pass it as --refiner={run_dir} to use it as it is")
        old = json.loads(path.read_text())
        if old != fingerprint:
            what = [k for k in ("frames", "labelled", "data_sha256", "flow", "config")
                    if old.get(k) != fingerprint[k]]
            kind = ("settings" if set(what) <= {"flow", "config"} else "frames or labels")
            raise RefinerMismatch(f"{run_dir} holds a refiner trained on other {kind} "
                                  f"({', '.join(what)}) than this run's; choose another "
                                  f"--out, or delete {run_dir} to train a new one")
        return
    files.atomic_write_text(str(path), json.dumps(fingerprint, indent=2))


def load_refiner(path: str, num_classes: int) -> tuple[WarpRefineTask, dict]:
    """(task, variables) of a trained refiner run: ``train_on_video``'s ``<out>/refiner``
    or a ``configs/warp_refine_*`` workdir (its ``refiner`` stage)."""

    run = pathlib.Path(path).expanduser()
    if (run / "refiner" / "checkpoints").is_dir():
        run = run / "refiner"
    cfg_file = next((d / "config.json" for d in (run, run.parent)
                     if (d / "config.json").is_file()), None)
    if cfg_file is None or not (run / "checkpoints").is_dir():
        raise ValueError(f"--refiner={path}: not a refiner run (needs checkpoints/ and a "
                         f"config.json beside it or one level up)")
    cfg = ml_collections.ConfigDict(json.loads(cfg_file.read_text()))
    if int(cfg.model.num_classes) != num_classes:
        raise ValueError(f"--refiner={path}: trained for {cfg.model.num_classes} classes, "
                         f"--num_classes={num_classes}")
    task = WarpRefineTask(cfg)
    # Read against the shapes its config implies, so a received file allocates nothing else.
    expected = jax.eval_shape(task.init_variables, jax.random.PRNGKey(0))
    variables, _ = checkpoint.load_variables(str(run), expected, "--refiner")
    return task, variables


def label_video(task: WarpRefineTask, variables: dict, frames: np.ndarray,
                labels: Mapping[int, np.ndarray], flows: tuple[np.ndarray, np.ndarray]
                ) -> dict[int, np.ndarray]:
    """Soft labels [H, W, C] for every frame, each refined along the chain from its
    nearest labelled frame (labelled frames keep their label as a one-hot)."""
    fwd, bwd = flows
    out: dict[int, np.ndarray] = {}
    for anchor, targets in prop.assign_anchors(len(frames), labels).items():
        for direction in (1, -1):
            side = [t for t in targets if (t - anchor) * direction > 0]
            if not side:
                continue
            last = max(abs(t - anchor) for t in side)
            idx = np.arange(anchor, anchor + direction * (last + 1), direction)
            to_prev = bwd[idx[:-1]] if direction == 1 else fwd[idx[1:]]
            probs = task.propagate(variables, labels[anchor], frames[idx], to_prev)
            for j, t in enumerate(idx):
                if int(t) in side:
                    out[int(t)] = probs[j]
        c = task.num_classes
        onehot = np.asarray(jnp.eye(c, dtype=jnp.float32))[np.minimum(labels[anchor], c - 1)]
        onehot[labels[anchor] == IGNORE_LABEL] = 1.0 / c
        out[anchor] = onehot
    return out
