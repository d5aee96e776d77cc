"""Static segmenters: images [B, H, W, 3] in [0, 1] -> logits [B, H, W, num_classes].

``Segmenter(backbone, head)`` normalises the images with the ImageNet mean/std, runs the
backbone (a dict of stage features), the head (logits at the head's stride) and resizes
the logits bilinearly to the input size, in float32. ``SmallSegNet`` is a ~110k-parameter
network with the same interface for CPU configs and tests. ``make_segmenter`` builds
either from an ``ml_collections`` model config (see ``default_config``).

Usage (any of them)::

    model = make_segmenter(config.model)
    variables = model.init(rng, images, train=False)        # {'params', 'batch_stats'}
    logits, updates = model.apply(variables, images, train=True, mutable=["batch_stats"],
                                  rngs={"dropout": key})
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vsegjax.models.heads import ConvBNReLU, DeepLabV3PlusHead, PSPHead, SimpleHead, \
    resize_bilinear
from vsegjax.models.resnet import DEPTHS, OUTPUT_STRIDES, ResNet

Dtype = Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "small")
HEADS = ("psp", "deeplabv3plus", "simple")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
SMALL_OUTPUT_STRIDE = 8


def normalize_images(images: jax.Array) -> jax.Array:
    """[0, 1] RGB -> ImageNet-standardised (per channel (x - mean) / std)."""
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    return (images.astype(jnp.float32) - mean) / std


def _check_images(images: jax.Array) -> None:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape [B, H, W, 3] (RGB in [0, 1]); "
                         f"got shape {tuple(images.shape)}")


def _segment(backbone: nn.Module, head: nn.Module, images: jax.Array, train: bool,
             normalize: bool, dtype: Dtype, return_features: bool):
    _check_images(images)
    x = normalize_images(images) if normalize else images.astype(jnp.float32)
    features = backbone(x.astype(dtype), train=train)
    logits = head(features, train=train).astype(jnp.float32)
    logits = resize_bilinear(logits, images.shape[1:3])
    return (logits, features) if return_features else logits


class Segmenter(nn.Module):
    """Backbone (image -> feature dict) + head (feature dict -> logits), upsampled.

    Parameters live under ``backbone`` and ``head``. With ``return_features=True`` the
    call returns ``(logits, features)`` (e.g. for EFC's feature-consistency loss).
    """
    backbone: nn.Module
    head: nn.Module
    normalize: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False, *,
                 return_features: bool = False):
        return _segment(self.backbone, self.head, images, train, self.normalize, self.dtype,
                        return_features)


class ContextBlock(nn.Module):
    """Residual dilated 3x3 conv: relu(x + BN(conv_d(x)))."""
    dilation: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        d = self.dilation
        y = nn.Conv(x.shape[-1], (3, 3), padding=((d, d), (d, d)), kernel_dilation=(d, d),
                    use_bias=False, dtype=self.dtype, name="conv")(x)
        y = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, name="bn")(y)
        return nn.relu(x + y)


class SmallEncoder(nn.Module):
    """Stem (two 3x3/2 convs), layer1 (3x3), layer2 (3x3/2), layer3 (dilated residual)."""
    width: int = 32
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        w, dt = self.width, self.dtype
        x = ConvBNReLU(max(1, w // 2), 3, stride=2, dtype=dt, name="stem1")(x.astype(dt), train)
        stem = ConvBNReLU(w, 3, stride=2, dtype=dt, name="stem2")(x, train)
        layer1 = ConvBNReLU(w, 3, dtype=dt, name="layer1")(stem, train)
        layer2 = ConvBNReLU(2 * w, 3, stride=2, dtype=dt, name="layer2")(layer1, train)
        layer3 = ContextBlock(2, dt, name="layer3")(layer2, train)
        return {"stem": stem, "layer1": layer1, "layer2": layer2, "layer3": layer3}


class SmallBackbone(nn.Module):
    """Small fast backbone with ResNet-at-OS8's feature keys and strides.

    "stem", "layer1" at stride 4 (``width`` channels); "layer2", "layer3", "layer4" at
    stride 8 (2 x ``width``), layer3/layer4 dilated 2/4 for context. Split like ``ResNet``
    into ``encoder`` (stem..layer3) and ``layer4``.
    """
    width: int = 32
    dtype: Dtype = jnp.float32
    output_stride = SMALL_OUTPUT_STRIDE

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        feats = SmallEncoder(self.width, self.dtype, name="encoder")(x, train)
        feats["layer4"] = ContextBlock(4, self.dtype, name="layer4")(feats["layer3"], train)
        return feats


class SmallSegNet(nn.Module):
    """Small network for CPU configs and tests: ``SmallBackbone`` + 1x1 classifier.

    Same parameter tree (``backbone``, ``head``) and call as
    ``Segmenter(SmallBackbone(width), SimpleHead(num_classes))``.
    """
    num_classes: int
    width: int = 32
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False, *,
                 return_features: bool = False):
        backbone = SmallBackbone(self.width, self.dtype, name="backbone")
        head = SimpleHead(self.num_classes, dtype=self.dtype, name="head")
        return _segment(backbone, head, images, train, True, self.dtype, return_features)


def default_config() -> ml_collections.ConfigDict:
    """Model config fields read by ``make_segmenter``, with their defaults."""
    return ml_collections.ConfigDict({
        "backbone": "small",        # one of BACKBONES
        "head": "simple",           # one of HEADS
        "num_classes": 19,
        "output_stride": 8,         # 8 | 16 | 32 (ResNet); the small backbone is 8 only
        "width": 32,                # small backbone width
        # Head width; None -> 512 (PSP) / 256 (DeepLabv3+), 2 x width on the small net.
        "head_channels": ml_collections.config_dict.placeholder(int),
        "dropout": 0.1,             # PSP / ASPP channel dropout
        "zero_init_residual": True,  # ResNet: last BN scale of each block starts at 0
        "dtype": "float32",         # computation dtype: float32 | bfloat16
        # ResNet: recompute each residual block in the backward pass (activation memory).
        "remat": False,
        # ResNet backbone weights to start from (vsegjax.models.convert); "" = random.
        "pretrained": "",
    })


def model_block(num_classes: int | None = None, **fields: Any) -> ml_collections.ConfigDict:
    """A config's ``model`` block: ``default_config`` with ``num_classes`` (no default in a
    config: it is the dataset's) and ``fields`` set; an unknown field is an error."""
    block = default_config().to_dict()
    unknown = sorted(set(fields) - set(block))
    if unknown:
        raise TypeError(f"model: unknown fields {unknown}; it has {sorted(block)}")
    block.update(fields, num_classes=num_classes)
    return ml_collections.ConfigDict(block)


def _choice(cfg, name: str, field: str, choices):
    value = cfg[field]
    if value not in choices:
        raise ValueError(f"{name}.{field}: unknown {value!r}; choose from {list(choices)}")
    return value


def _positive_int(cfg, name: str, field: str, allow_none: bool = False):
    value = cfg[field]
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}.{field}: must be a positive integer; got {value!r}")
    return value


def make_segmenter(config: Mapping[str, Any] | ml_collections.ConfigDict, *,
                   name: str = "model") -> nn.Module:
    """Builds a segmenter from a model config (fields: see ``default_config``).

    ``backbone``, ``head`` and ``num_classes`` must be given; other fields fall back to
    ``default_config``.
    Bad values raise ``ValueError`` naming ``{name}.{field}``.
    """
    defaults = default_config()
    for field in ("backbone", "head", "num_classes"):
        if config.get(field) is None:
            raise ValueError(f"{name}.{field}: missing (e.g. {defaults[field]!r})")
    config = {**defaults.to_dict(), **dict(config)}  # the fields it lacks: their defaults
    backbone_name = _choice(config, name, "backbone", BACKBONES)
    head_name = _choice(config, name, "head", HEADS)
    num_classes = _positive_int(config, name, "num_classes")
    dtype = DTYPES[_choice(config, name, "dtype", tuple(DTYPES))]
    width = _positive_int(config, name, "width")
    head_channels = _positive_int(config, name, "head_channels", allow_none=True)
    dropout = config["dropout"]
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"{name}.dropout: must be in [0, 1); got {dropout!r}")
    output_stride = config["output_stride"]

    if backbone_name == "small":
        if output_stride != SMALL_OUTPUT_STRIDE:
            raise ValueError(f"{name}.output_stride: the 'small' backbone has output stride "
                             f"{SMALL_OUTPUT_STRIDE}; got {output_stride!r}")
        if head_name == "simple":
            return SmallSegNet(num_classes, width, dtype)
        backbone = SmallBackbone(width, dtype)
        channels = head_channels or 2 * width
        low_level = min(48, width)
    else:
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"{name}.output_stride: unknown {output_stride!r}; "
                             f"choose from {list(OUTPUT_STRIDES)}")
        depth = int(backbone_name.removeprefix("resnet"))
        assert depth in DEPTHS
        backbone = ResNet(depth, output_stride,
                          bool(config["zero_init_residual"]),
                          dtype, bool(config["remat"]))
        channels = head_channels
        low_level = 48

    if head_name == "simple":
        head = SimpleHead(num_classes, dtype=dtype)
    elif head_name == "psp":
        head = PSPHead(num_classes, channels=channels or 512, dropout=dropout, dtype=dtype)
    else:
        head = DeepLabV3PlusHead(num_classes, output_stride=output_stride,
                                 channels=channels or 256, low_level_channels=low_level,
                                 dropout=dropout, dtype=dtype)
    return Segmenter(backbone, head, dtype=dtype)


class StaticModel(nn.Module):
    """Wraps a segmenter so its variables sit under ``static`` (as in the video models)."""

    static: nn.Module

    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        return self.static(images, train=train)


def apply_static(model: nn.Module, params: Any, model_state: dict, images: jax.Array,
                 train: bool, rng: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """(logits, new model_state) of a ``StaticModel``; BN statistics update when training."""
    variables = {"params": params, **model_state}
    if not train:
        return model.apply(variables, images, train=False), model_state
    logits, new_state = model.apply(variables, images, train=True,
                                    mutable=list(model_state), rngs={"dropout": rng})
    return logits, {**model_state, **new_state}
