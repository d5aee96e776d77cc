"""What every method whose model holds a static segmenter shares."""

from __future__ import annotations

import ml_collections

from vsegjax.core import config as core_config
from vsegjax.core.task import Task, Variables
from vsegjax.models import convert
from vsegjax.models.segmenter import model_block


class SegmenterTask(Task):
    """A task whose model holds a segmenter: ``model.pretrained`` (a converted ResNet
    checkpoint or a torchvision ``.pth``, ``vsegjax.models.convert``) initialises every
    ResNet backbone in it."""

    @classmethod
    def config_template(cls) -> ml_collections.ConfigDict:
        # loss.relaxation_window: > 0 turns L_seg into VPLR's boundary-relaxed NLL over
        # that window (losses/relaxation.py); any method's segmenter may use it.
        return core_config.extend(super().config_template(), model=model_block(),
                                  loss=dict(relaxation_window=0))

    def pretrained_source(self) -> str:
        return self.config.model.pretrained

    def load_pretrained(self, variables: Variables, source: str) -> Variables:
        return convert.apply_pretrained(variables, convert.load_pretrained(source))

    @property
    def relaxation_window(self) -> int:
        """``loss.relaxation_window`` (``config_template``)."""
        return int(self.config.loss.relaxation_window)
