"""EFC's training pairs (I_i, I_{i+dt}) drawn from whole snippets, and the host-side batch glue.

The pipeline delivers whole augmented snippets ([B, T, ...], the same augmentation on
every frame); ``sample_pairs`` draws ``pairs_per_snippet`` index pairs per snippet inside
the jitted step from the step's key, so the draw is reproducible and resumes exactly.
A share of the pairs contains the snippet's labelled frame (``labelled_share``); the rest
are any two frames ``dt`` apart, ``dt`` uniform in ``dt_range`` (clipped to the snippet).

``MixedIterator`` appends batches of unlabelled snippets (another dataset, labels dropped)
to each labelled batch: the "+UD" row of the paper's Table 1.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vsegjax.losses.segmentation import IGNORE_LABEL

# Per-pair keys of the snippet format that the EFC step does not use (it learns its own
# flow); dropped on the host so they are not sent to the devices.
UNUSED_KEYS = ("flow_fwd", "flow_bwd", "occ_fwd", "occ_bwd", "degraded", "snippet_id")


def candidate_pairs(num_frames: int, dt_range: tuple[int, int]) -> np.ndarray:
    """All (i, j) with ``j - i`` in ``dt_range`` (inclusive) inside ``num_frames``: [N, 2]."""
    lo, hi = int(dt_range[0]), int(dt_range[1])
    if lo < 1 or hi < lo:
        raise ValueError(f"config field efc.dt_range: need 1 <= min <= max; got {dt_range}")
    pairs = [(i, i + dt) for dt in range(lo, hi + 1) for i in range(num_frames - dt)]
    if not pairs:
        raise ValueError(f"config field efc.dt_range: {dt_range} leaves no pair in a snippet "
                         f"of {num_frames} frames")
    return np.asarray(pairs, np.int32)


def sample_pairs(rng: jax.Array, num_frames: int, label_pos: jax.Array, labelled: jax.Array,
                 pairs_per_snippet: int, dt_range: tuple[int, int],
                 labelled_share: float) -> tuple[jax.Array, jax.Array]:
    """Frame indices (first [B, P], second [B, P]) of the pairs, ``first < second``.

    Args:
      rng: a key.
      num_frames: T of the snippets.
      label_pos: [B] index of each snippet's labelled frame.
      labelled: [B] bool, False for unlabelled snippets (their pairs are never "labelled").
      pairs_per_snippet: P.
      dt_range: (min, max) frame distance, inclusive.
      labelled_share: probability that a pair contains the labelled frame.

    ``dt`` is uniform over the distances the pair can have (then the position uniform):
    a labelled pair may only use distances with a partner inside the snippet.
    """
    cands = jnp.asarray(candidate_pairs(num_frames, dt_range))  # [N, 2]
    dts = cands[:, 1] - cands[:, 0]
    b = label_pos.shape[0]
    k_share, k_pick = jax.random.split(rng)
    want_label = jax.random.bernoulli(k_share, labelled_share, (b, pairs_per_snippet))
    want_label = want_label & labelled[:, None]
    has = (cands[None, :, 0] == label_pos[:, None]) | (cands[None, :, 1] == label_pos[:, None])
    # allowed[b, p, n]: candidate n may be drawn for pair p of snippet b.
    allowed = jnp.where(want_label[..., None], has[:, None, :], True)
    # Weight each candidate by 1 / (number of allowed candidates with its dt): dt uniform.
    same_dt = (dts[:, None] == dts[None, :]).astype(jnp.float32)  # [N, N]
    counts = jnp.einsum("bpn,nm->bpm", allowed.astype(jnp.float32), same_dt)
    logits = jnp.where(allowed, -jnp.log(jnp.maximum(counts, 1.0)), -jnp.inf)
    choice = jax.random.categorical(k_pick, logits, axis=-1)  # [B, P]
    return cands[choice, 0], cands[choice, 1]


def gather_frames(x: jax.Array, index: jax.Array) -> jax.Array:
    """``x[b, index[b, p]]`` for x [B, T, ...] and index [B, P] -> [B * P, ...]."""
    picked = jax.vmap(lambda xb, ib: xb[ib])(x, index)
    return picked.reshape((-1,) + x.shape[2:])


class PrepareSnippets:
    """Picklable host batch function: keeps the labels the method may use.

    ``labels="annotated"``: only each snippet's ``label_index`` frame keeps its labels (as in
    Cityscapes, where one frame of 30 is labelled); ``"all"``: every frame with
    ``has_label``; ``"none"``: no labels (unlabelled video). Unused per-pair keys go.
    """

    def __init__(self, labels: str = "annotated"):
        if labels not in ("annotated", "all", "none"):
            raise ValueError(f"config field efc.labels: {labels!r}; choose annotated, all or none")
        self.labels = labels

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in batch.items() if k not in UNUSED_KEYS}
        if "labels" in out:
            labels = np.array(out["labels"], copy=True)
        else:  # video without any labels (e.g. a user's unlabelled sequences)
            labels = np.full(np.shape(out["frames"])[:4], IGNORE_LABEL, np.int32)
            out.setdefault("label_pos", np.zeros(labels.shape[0], np.int32))
        b, t = labels.shape[:2]
        keep = np.zeros((b, t), bool)
        if self.labels == "annotated":
            keep[np.arange(b), np.asarray(out["label_pos"])] = True
        elif self.labels == "all":
            keep = np.asarray(out.get("has_label", np.ones((b, t), bool)), bool)
        labels[~keep] = IGNORE_LABEL
        out["labels"] = labels
        out["labelled"] = keep.any(axis=1)
        out["has_label"] = keep
        return out


class MixedIterator:
    """Concatenates a batch of each iterator per step; checkpointable like grain's.

    ``get_state()`` / ``set_state()`` hold both iterators' positions (JSON-serialisable
    dicts), so an interrupted run resumes both streams where they were.
    """

    def __init__(self, labelled: Iterator[dict], unlabelled: Iterator[dict]):
        self.labelled = labelled
        self.unlabelled = unlabelled

    def __iter__(self) -> "MixedIterator":
        return self

    def __next__(self) -> dict[str, Any]:
        a, b = next(self.labelled), next(self.unlabelled)
        missing = set(a) ^ set(b)
        if missing:
            raise ValueError(f"labelled and unlabelled batches have different keys: "
                             f"{sorted(missing)} (do both datasets have the same fields?)")
        for key in a:
            if np.shape(a[key])[1:] != np.shape(b[key])[1:]:
                raise ValueError(f"labelled and unlabelled batches differ in field {key!r}: "
                                 f"{np.shape(a[key])} vs {np.shape(b[key])} (same snippet "
                                 f"length and crop size needed)")
        return {k: np.concatenate([a[k], b[k]]) for k in a}

    def get_state(self) -> dict[str, Any]:
        return {"labelled": self.labelled.get_state(),
                "unlabelled": self.unlabelled.get_state()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.labelled.set_state(state["labelled"])
        self.unlabelled.set_state(state["unlabelled"])
