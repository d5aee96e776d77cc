"""GRFP with the paper's setup on Cityscapes sequences (GRFP paper, sections 3.3-4).

Static net: ResNet-50 PSPNet (output stride 8); forward model over T = 5 frames (the
labelled 20th frame and the 4 before it); STGRU 7x7; Adam(beta1 = 0.95, beta2 = 0.99,
lr 2e-5) for the STGRU; 512x512 training crops; evaluation at full resolution
(1024x2048). Flow: learned FlowNetS, frozen (set flow.checkpoint to a trained one).

Needs the ``cityscapes_sequences`` TFDS dataset (data_prep/, a later milestone).
"""

import importlib.util
import os

import ml_collections


def _base_config() -> ml_collections.ConfigDict:
    """configs/grfp_synthetic.py, loaded by path (configs/ is not an installed package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grfp_synthetic.py")
    spec = importlib.util.spec_from_file_location("grfp_synthetic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus",
    "train", "motorcycle", "bicycle")


def get_config() -> ml_collections.ConfigDict:
    c = _base_config()
    c.data.name = "cityscapes_sequences"
    c.data.config = "default"
    c.data.build_if_missing = False
    c.data.class_names = list(CITYSCAPES_CLASSES)

    c.input.batch_size = 8
    c.input.window = (4, 0)  # T = 5: the labelled frame and the 4 before it
    c.input.label_frame = "annotated"
    c.input.worker_count = 8
    c.input.augment = ml_collections.ConfigDict(dict(
        resize=None, scale_range=(0.5, 2.0), crop_size=(512, 512), hflip=True,
        color=None, occlusion_out_of_view=True))

    c.model = ml_collections.ConfigDict(dict(
        backbone="resnet50", head="psp", num_classes=len(CITYSCAPES_CLASSES),
        output_stride=8, width=32, dtype="bfloat16"))

    c.flow = ml_collections.ConfigDict(dict(source="flownet", checkpoint="", trainable=False,
                                            width=1.0))

    c.grfp.mode = "forward"
    c.grfp.remat = True  # T = 5 frames of a ResNet-50 at 512x512
    c.grfp.train_static = True  # the paper's default refines the static net
    c.grfp.loss_weights = dict(L_fwd=1.0)

    c.static_stage.train.num_steps = 90_000
    c.static_stage.optimizer = ml_collections.ConfigDict(dict(
        name="sgd", learning_rate=0.01, momentum=0.9, schedule="poly", power=0.9,
        weight_decay=1e-4))
    c.grfp_stage.train.num_steps = 20_000
    c.grfp_stage.train.checkpoint_every = 1000
    c.grfp_stage.optimizer = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=2e-5, b1=0.95, b2=0.99, schedule="constant"))

    c.eval = ml_collections.ConfigDict(dict(split="validation", num_snippets=0, batch_size=1,
                                            num_panels=10))
    return c
