"""Trains the toy task and SIGKILLs itself while fetching batch ``argv[2]`` (a hard crash)."""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _toy_task import OnFetch, ToyTask, send_signal, toy_config  # noqa: E402
from vsegjax.core import train  # noqa: E402


class KilledToyTask(ToyTask):
    def train_iterator(self, seed):
        return OnFetch(super().train_iterator(seed), int(sys.argv[2]),
                       send_signal(signal.SIGKILL))


if __name__ == "__main__":
    cfg = toy_config(num_steps=9, checkpoint_every=3, async_checkpoints=True)
    train(cfg, sys.argv[1], KilledToyTask(cfg))
