"""What every method whose model holds a static segmenter shares."""

from __future__ import annotations

from vsegjax.core.task import Task, Variables
from vsegjax.models import convert


class SegmenterTask(Task):
    """A task whose model holds a segmenter: ``model.pretrained`` (a converted ResNet
    checkpoint or a torchvision ``.pth``, ``vsegjax.models.convert``) initialises every
    ResNet backbone in it."""

    def load_pretrained(self, variables: Variables, source: str) -> Variables:
        return convert.apply_pretrained(variables, convert.load_pretrained(source))

    @property
    def relaxation_window(self) -> int:
        """``loss.relaxation_window``: > 0 turns L_seg into VPLR's boundary-relaxed NLL
        over that window (``losses/relaxation.py``); any method's segmenter may use it."""
        return int(self.config.get("loss", {}).get("relaxation_window", 0))
