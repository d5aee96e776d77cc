"""EFC's training pairs (I_i, I_{i+dt}), drawn from whole snippets inside the step.

The pipeline delivers whole augmented snippets ([B, T, ...], the same augmentation on
every frame); ``sample_pairs`` draws ``pairs_per_snippet`` index pairs per snippet inside
the jitted step from the step's key, so the draw is reproducible and resumes exactly.
A share of the pairs contains the snippet's labelled frame (``labelled_share``); the rest
are any two frames ``dt`` apart, ``dt`` uniform in ``dt_range`` (clipped to the snippet).

The host side (``PrepareSnippets``: which labels the method sees; ``MixedIterator``: the
unlabelled "+UD" stream of the paper's Table 1) is in ``data/transforms.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


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


