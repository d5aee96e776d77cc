"""How much of the shared encoder's gradient each EFC loss term supplies.

    python benchmarks/efc_gradient_share.py --workdir=runs/efc_full [--batches=4]
        [--weights=L_pm=3,L_sm=0.3,L_occ=1.2]

In EFC the segmenter's stem..layer3 (``params/static/backbone/encoder``) is shared by the
segmentation and the flow decoder; Adam makes each decoder's own step size independent of
its loss's scale, so the loss weights matter where the terms meet: on that encoder. For a
trained run's last checkpoint (or the initial weights with ``--init``) this prints, per
term (weighted as in the run's config, or as ``--weights`` says), the norm of its gradient
on the encoder, and the cosine between the segmentation term's gradient and the flow
terms' sum, averaged over a few training batches.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from vsegjax.core import checkpoint

from vsegjax import experiments
from vsegjax.methods.efc.task import EFCTask

FLOW_TERMS = ("L_occ", "L_pm", "L_sm")


def _encoder(grads: dict) -> jax.Array:
    leaves = jax.tree.leaves(grads["static"]["backbone"]["encoder"])
    return jnp.concatenate([g.ravel() for g in leaves])


def term_gradient_fns(task: EFCTask) -> dict:
    """{term: jitted fn(params, model_state, batch, rng) -> its weighted gradient on the
    shared encoder, flattened}."""
    def make(term, w):
        def fn(params, model_state, batch, rng):
            weights, task.weights = task.weights, {term: w}  # read while tracing loss_fn
            try:
                g = jax.grad(lambda p: task.loss_fn(p, model_state, batch, rng)[0])(params)
            finally:
                task.weights = weights
            return _encoder(g)
        return jax.jit(fn)
    return {term: make(term, w) for term, w in task.weights.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, help="an EFC run (config.json, efc/checkpoints)")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--init", action="store_true", help="initial weights, not the checkpoint")
    ap.add_argument("--weights", default="", help="term=weight,... replacing the run's")
    args = ap.parse_args(argv)
    try:
        config = experiments.load_stage_config(args.workdir, "efc")
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"--workdir must be an EFC run's folder: {e}") from None
    for item in filter(None, args.weights.split(",")):
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--weights: {item!r} is not term=weight")
        config.efc.loss_weights[name] = float(value)
    task = EFCTask(config)
    if args.init:
        variables = task.init_variables(jax.random.PRNGKey(0))
        params = variables.pop("params")
        model_state = variables
    else:
        state = checkpoint.load_state_tree(os.path.join(args.workdir, "efc"))
        params, model_state = state["params"], state["model_state"]
    it = task.train_iterator(0)
    fns = term_gradient_fns(task)
    norms: dict[str, list[float]] = {}
    cosines = []
    for i in range(args.batches):
        batch = next(it)
        rng = jax.random.PRNGKey(i)
        g = {t: np.asarray(fn(params, model_state, batch, rng)) for t, fn in fns.items()}
        for term, v in g.items():
            norms.setdefault(term, []).append(float(np.linalg.norm(v)))
        flow = sum((g[t] for t in FLOW_TERMS if t in g), np.zeros(1))
        if "L_seg" in g and np.linalg.norm(flow) > 0:
            cosines.append(float(g["L_seg"] @ flow / (np.linalg.norm(g["L_seg"])
                                                      * np.linalg.norm(flow))))
    print(f"weights: {task.weights}")
    print("gradient norm on the shared encoder (mean over batches):")
    for term, v in norms.items():
        print(f"  {term:7s} {np.mean(v):.4f}")
    if cosines:
        print(f"cosine(L_seg, flow terms): {np.mean(cosines):+.3f}")


if __name__ == "__main__":
    main()
