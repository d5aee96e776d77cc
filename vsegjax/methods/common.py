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
