"""EFC with the paper's setup on Cityscapes sequences (EFC paper, "Implementation details").

PSPNet on a dilated ResNet-50 (output stride 8); the modified FlowNetS decoder on the
shared layers 1-3; SGD with momentum 0.9, weight decay 1e-4, poly learning rate 0.01 with
power 0.9; 713x713 crops; batch 16; 120k iterations; pairs (I_i, I_{i+dt}), dt in [1, 5]
from the 30-frame snippets around each finely labelled 20th frame. The static baseline
is trained alone with the same settings. Needs ``cityscapes_sequences``
(data_prep/cityscapes.py); "+UD" would mix in its ``demoVideo``/extra sequences
through ``efc.unlabelled_data``.

    python -m vsegjax.main --config=configs/efc_cityscapes.py --workdir=runs/efc_cityscapes
"""

import importlib.util
import os

import ml_collections


def _load(name: str, *args):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sgd() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        name="sgd", learning_rate=0.01, momentum=0.9, schedule="poly", power=0.9,
        warmup_steps=0, weight_decay=1e-4))


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    c = _load("efc_synthetic").get_config(variant)
    classes = _load("grfp_cityscapes").CITYSCAPES_CLASSES
    c.data = ml_collections.ConfigDict(dict(
        name="cityscapes_sequences", config="default", data_dir="~/tensorflow_datasets",
        build_if_missing=False, num_workers=0, class_names=list(classes)))
    c.input.batch_size = 16
    c.input.worker_count = 8
    c.input.augment = ml_collections.ConfigDict(dict(
        resize=None, scale_range=(0.5, 2.0), crop_size=(713, 713), hflip=True,
        color=None, occlusion_out_of_view=True))
    c.model = ml_collections.ConfigDict(dict(
        backbone="resnet50", head="psp", num_classes=len(classes), output_stride=8,
        width=32, dtype="bfloat16"))
    # FlowNetS-sized decoder on the shared features (ResNet-50: layer1 256, layer3 1024 ch).
    c.efc.flow.update(dict(joint_channels=256, extra_channels=(512, 512, 1024),
                           redir_channels=32, max_displacement=4))
    c.efc.pairs_per_snippet = 5  # TCC_multi: five pairs per labelled snippet
    if c.efc.unlabelled_data is not None:
        c.efc.unlabelled_data = None  # set to an unlabelled Cityscapes sequence dataset
    c.train.num_steps = 120_000
    c.train.log_every, c.train.checkpoint_every, c.train.eval_every = 100, 2000, 10_000
    c.optimizer = _sgd()
    c.static_stage.train = ml_collections.ConfigDict(c.train.to_dict())
    c.static_stage.optimizer = _sgd()
    if len(c.efc.flow_pretrain):
        c.efc.flow_pretrain.train.num_steps = 120_000
        c.efc.flow_pretrain.optimizer = _sgd().to_dict()
    c.eval.batch_size = 16
    c.eval.farneback = False  # no flow ground truth in Cityscapes
    return c
