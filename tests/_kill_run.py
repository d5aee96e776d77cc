"""Trains the toy task and SIGKILLs itself while fetching batch ``argv[2]`` (a hard crash)."""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _toy_task import ToyTask, toy_config  # noqa: E402
from vsegjax.train import train  # noqa: E402


class _Killer:
    def __init__(self, it, at):
        self.it, self.at, self.count = it, at, 0

    def __next__(self):
        self.count += 1
        if self.count == self.at:
            os.kill(os.getpid(), signal.SIGKILL)
        return next(self.it)

    def get_state(self):
        return self.it.get_state()

    def set_state(self, state):
        self.it.set_state(state)


class KilledToyTask(ToyTask):
    def train_iterator(self, seed):
        return _Killer(super().train_iterator(seed), int(sys.argv[2]))


if __name__ == "__main__":
    cfg = toy_config(num_steps=9, checkpoint_every=3, async_checkpoints=True)
    train(cfg, sys.argv[1], KilledToyTask(cfg))
