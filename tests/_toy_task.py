"""A toy task for trainer tests (importable by subprocesses, so not a test module)."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vsegjax.core import config as core_config
from vsegjax.data import pipeline
from vsegjax.core import Task


class _Net(nn.Module):
    norm: bool = True

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(8, (3, 3), use_bias=not self.norm)(x)  # a bias before BN does nothing
        if self.norm:
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return nn.Dense(3)(nn.relu(x))


class OnFetch:
    """Wraps a grain iterator and calls ``action()`` as batch ``at`` is fetched (a Ctrl-C,
    a signal), keeping ``get_state``/``set_state`` for the trainer's checkpoints."""

    def __init__(self, it, at, action):
        self.it, self.at, self.action, self.count = it, at, action, 0

    def __next__(self):
        self.count += 1
        if self.count == self.at:
            self.action()
        return next(self.it)

    def get_state(self):
        return self.it.get_state()

    def set_state(self, state):
        self.it.set_state(state)


def send_signal(signum):
    """An ``OnFetch`` action: this process sends itself ``signum``."""
    return lambda: os.kill(os.getpid(), signum)


class ToyTask(Task):
    """Per-pixel 3-class segmentation of random colour images (class = brightest channel)."""

    def __init__(self, config, poison_from=None, norm=True, poison_value=np.inf):
        super().__init__(config)
        self.model = _Net(norm=norm)
        rng = np.random.default_rng(0)
        frames = rng.integers(0, 256, (32, 1, 8, 8, 3)).astype(np.uint8)
        self.source = [{"frames": f, "labels": f.argmax(-1).astype(np.uint8),
                        "has_label": np.ones(1, bool), "label_index": np.int32(0),
                        "poison": np.float32(0.0)} for f in frames]
        if poison_from is not None:  # batches holding these records: inputs x (1 + value)
            for ex in self.source[poison_from:]:  # (inf: a NaN loss; 1e4: a huge one)
                ex["poison"] = np.float32(poison_value)

    def init_variables(self, rng):
        return dict(self.model.init(rng, jnp.zeros((1, 8, 8, 3))))

    def loss_fn(self, params, model_state, batch, rng):
        x = batch["frames"][:, 0] * (1.0 + batch["poison"][:, None, None, None])
        logits, new_state = self.model.apply({"params": params, **model_state}, x,
                                             train=True, mutable=list(model_state))
        y = batch["labels"][:, 0]
        nll = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], -1))
        noise = 0.0 * jax.random.normal(rng)  # the step key must be usable
        return nll + noise, ({"L_seg": nll}, dict(new_state))

    def train_iterator(self, seed):
        ds = pipeline.make_dataset(self.source, batch_size=self.config.batch_size, seed=seed,
                                   shuffle=not self.config.get("no_shuffle", False))
        return iter(ds)


def toy_config(num_steps=12, **train):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.batch_size = 8
    c.train = ml_collections.ConfigDict(dict(num_steps=num_steps, log_every=3,
                                             checkpoint_every=3, init_from="",
                                             async_checkpoints=False))
    c.train.update(train)
    c.optimizer = core_config.adam(0.05, warmup_steps=0, weight_decay=0.0)
    return c


class WiderToyTask(ToyTask):
    """ToyTask with a Dense_0 kernel of 4 outputs instead of 3: a model that a ToyTask
    checkpoint does not fit (init_from must refuse it, naming the parameter)."""

    def init_variables(self, rng):
        variables = super().init_variables(rng)
        kernel = variables["params"]["Dense_0"]["kernel"]
        variables["params"]["Dense_0"]["kernel"] = jnp.zeros(kernel.shape[:-1] + (4,))
        return variables
