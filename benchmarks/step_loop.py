"""Throughput of the shared trainer's step loop when the host reads a device value every
step (as the loop did before: ``bool(ok)`` after each step) and when it reads the
non-finite guard only every ``log_every`` steps (the default now).

    python benchmarks/step_loop.py [--devices 8 --steps 300 --log_every 50]

The model is small enough that dispatch, not arithmetic, sets the pace: a 3x3 conv and a
dense layer on 8x8 images, a global batch of 8 over 8 fake CPU devices. Each setting runs
``vsegjax.core.train`` for 20 and for 20 + ``--steps`` steps in fresh workdirs; the
difference of the wall times over ``--steps`` is the per-step cost without compilation
and start-up. On an accelerator, where the host can run ahead, the gap is larger.
"""

import argparse
import os
import tempfile
import time

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--devices", type=int, default=8)
parser.add_argument("--steps", type=int, default=300)
parser.add_argument("--log_every", type=int, default=50)
parser.add_argument("--repeats", type=int, default=2)
args = parser.parse_args()
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           f" --xla_force_host_platform_device_count={args.devices}")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402

from vsegjax.data import pipeline  # noqa: E402
from vsegjax.core import Task, train  # noqa: E402


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.relu(nn.Conv(8, (3, 3))(x)))


class TinyTask(Task):
    """Per-pixel class = brightest channel, on random 8x8 images held in memory."""

    def __init__(self, config):
        super().__init__(config)
        rng = np.random.default_rng(0)
        frames = rng.integers(0, 256, (64, 8, 8, 3)).astype(np.float32) / 255
        self.source = [{"frames": f, "labels": f.argmax(-1).astype(np.int32)} for f in frames]
        self.model = _Net()

    def init_variables(self, rng):
        return dict(self.model.init(rng, jnp.zeros((1, 8, 8, 3))))

    def loss_fn(self, params, model_state, batch, rng):
        logits = self.model.apply({"params": params}, batch["frames"])
        nll = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits),
                                            batch["labels"][..., None], -1))
        return nll, ({"L_seg": nll}, model_state)

    def train_iterator(self, seed):
        return iter(pipeline.make_dataset(self.source, batch_size=self.config.batch_size,
                                          seed=seed))


def config(num_steps: int, check_every: int) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed, c.batch_size = 0, 8
    c.train = ml_collections.ConfigDict(dict(
        num_steps=num_steps, log_every=args.log_every, checkpoint_every=10 ** 9,
        check_finite_every=check_every, init_from="", async_checkpoints=True,
        report_every_secs=1e9))
    c.optimizer = ml_collections.ConfigDict(dict(name="adam", learning_rate=1e-3,
                                                 schedule="constant"))
    return c


def wall(num_steps: int, check_every: int) -> float:
    with tempfile.TemporaryDirectory() as workdir:
        cfg = config(num_steps, check_every)
        start = time.perf_counter()
        train(cfg, workdir, TinyTask(cfg))
        return time.perf_counter() - start


def main() -> None:
    logging.set_verbosity(logging.WARNING)
    print(f"{jax.device_count()} {jax.devices()[0].platform} devices, "
          f"{args.steps} timed steps, best of {args.repeats}")
    for name, check_every in (("host read every step", 1),
                              (f"guard read every {args.log_every} steps", args.log_every)):
        per_step = min((wall(20 + args.steps, check_every) - wall(20, check_every)) / args.steps
                       for _ in range(args.repeats))
        print(f"{name:<32}{1 / per_step:8.0f} steps/s  ({per_step * 1e3:.2f} ms/step)")


if __name__ == "__main__":
    main()
