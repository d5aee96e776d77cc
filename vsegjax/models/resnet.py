"""ResNet backbones (He et al., "Deep Residual Learning for Image Recognition"), NHWC.

The layout follows torchvision's ResNet v1.5 (the stride of a bottleneck block sits in
its 3x3 conv) without the classifier, so parameter counts match torchvision's
``resnet18/34/50/101`` minus ``fc`` (ResNet-18: 11,176,512; ResNet-50: 23,508,032).

Output stride 8 or 16 is reached as in DeepLab / PSPNet ("dilated ResNet"): the stride of
layer4 (OS16) or of layer3 and layer4 (OS8) is replaced by dilation 2 and 4. As in
torchvision's ``replace_stride_with_dilation``, the first block of a dilated stage keeps the
previous stage's dilation and the following blocks use the new one.

The network is built from two pieces so a joint model (EFC: one shared encoder, separate
segmentation and flow decoders) can run them separately:

* ``ResNetEncoder``: stem + layer1..layer3, parameters under ``encoder``;
* ``ResNetLayer4``: layer4, parameters under ``layer4``.

``ResNet`` is exactly ``ResNetLayer4(ResNetEncoder(x))`` with those two subtrees.
Parameter names mirror torchvision (``conv1``/``bn1``..., ``downsample_conv``/``_bn``) so
pretrained weights can be mapped across by name.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

STAGE_NAMES = ("stem", "layer1", "layer2", "layer3", "layer4")
# depth -> (block type, blocks per stage)
DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}
OUTPUT_STRIDES = (8, 16, 32)
STAGE_WIDTHS = (64, 128, 256, 512)  # bottleneck width; output channels x4 for bottleneck

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu").
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def check_resnet_args(depth: int, output_stride: int) -> None:
    if depth not in DEPTHS:
        raise ValueError(f"ResNet depth: unknown {depth!r}; choose from {sorted(DEPTHS)}")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"ResNet output_stride: unknown {output_stride!r}; "
                         f"choose from {list(OUTPUT_STRIDES)}")


def stage_plan(output_stride: int) -> dict[str, tuple[int, int, int]]:
    """layer name -> (stride, dilation of the first block, dilation of the other blocks)."""
    plan, dilation = {}, 1
    current_stride = 4  # after the stem
    for i, name in enumerate(STAGE_NAMES[1:]):
        stride = 1 if i == 0 else 2
        first = dilation
        if stride == 2 and current_stride * 2 > output_stride:
            dilation *= 2
            stride = 1
        current_stride *= stride
        plan[name] = (stride, first, dilation)
    return plan


def batch_norm(train: bool, dtype: Dtype, name: str, zero_init: bool = False) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                        scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
                        name=name)


def conv(features: int, kernel: int, dtype: Dtype, name: str, stride: int = 1,
         dilation: int = 1) -> nn.Conv:
    """Bias-free conv with PyTorch-style symmetric padding ``dilation * (kernel // 2)``."""
    pad = dilation * (kernel // 2)
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), kernel_dilation=(dilation, dilation),
                   use_bias=False, dtype=dtype, kernel_init=conv_init, name=name)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34); output channels = ``features``."""
    features: int
    stride: int = 1
    dilation: int = 1
    zero_init_residual: bool = True
    dtype: Dtype = jnp.float32
    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out_ch = self.features * self.expansion
        y = conv(self.features, 3, self.dtype, "conv1", self.stride, self.dilation)(x)
        y = nn.relu(batch_norm(train, self.dtype, "bn1")(y))
        y = conv(out_ch, 3, self.dtype, "conv2", 1, self.dilation)(y)
        y = batch_norm(train, self.dtype, "bn2", self.zero_init_residual)(y)
        return nn.relu(y + _shortcut(x, out_ch, self.stride, train, self.dtype))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, dilated), 1x1 expand x4 (ResNet-50/101, v1.5)."""
    features: int
    stride: int = 1
    dilation: int = 1
    zero_init_residual: bool = True
    dtype: Dtype = jnp.float32
    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out_ch = self.features * self.expansion
        y = conv(self.features, 1, self.dtype, "conv1")(x)
        y = nn.relu(batch_norm(train, self.dtype, "bn1")(y))
        y = conv(self.features, 3, self.dtype, "conv2", self.stride, self.dilation)(y)
        y = nn.relu(batch_norm(train, self.dtype, "bn2")(y))
        y = conv(out_ch, 1, self.dtype, "conv3")(y)
        y = batch_norm(train, self.dtype, "bn3", self.zero_init_residual)(y)
        return nn.relu(y + _shortcut(x, out_ch, self.stride, train, self.dtype))


def _shortcut(x: jax.Array, out_ch: int, stride: int, train: bool, dtype: Dtype) -> jax.Array:
    """Identity, or 1x1 strided projection + BN when the shape changes (called in a block)."""
    if stride == 1 and x.shape[-1] == out_ch:
        return x
    x = conv(out_ch, 1, dtype, "downsample_conv", stride)(x)
    return batch_norm(train, dtype, "downsample_bn")(x)


def _run_stage(x: jax.Array, train: bool, *, depth: int, stage: str, output_stride: int,
               zero_init_residual: bool, dtype: Dtype, remat: bool = False) -> jax.Array:
    """Applies the blocks of one stage as children ``block0``, ``block1``... of the caller.

    ``remat``: each block keeps only its input for the backward pass and recomputes the
    rest (``nn.remat``; same parameters and results), trading about a third more compute
    for the activation memory of deep, wide crops (EFC's ten 713x713 frames per chip)."""
    kind, counts = DEPTHS[depth]
    block_cls = BasicBlock if kind == "basic" else Bottleneck
    if remat:
        block_cls = nn.remat(block_cls, static_argnums=(2,))  # (self, x, train)
    index = STAGE_NAMES.index(stage) - 1
    stride, first_dilation, dilation = stage_plan(output_stride)[stage]
    for b in range(counts[index]):
        x = block_cls(STAGE_WIDTHS[index], stride=stride if b == 0 else 1,
                      dilation=first_dilation if b == 0 else dilation,
                      zero_init_residual=zero_init_residual, dtype=dtype,
                      name=f"block{b}")(x, train)
    return x


class ResNetStage(nn.Module):
    """One of layer1..layer3 of a ResNet of the given depth and output stride."""
    depth: int
    stage: str
    output_stride: int = 32
    zero_init_residual: bool = True
    dtype: Dtype = jnp.float32
    remat: bool = False  # recompute each block in the backward pass

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return _run_stage(x, train, depth=self.depth, stage=self.stage,
                          output_stride=self.output_stride,
                          zero_init_residual=self.zero_init_residual, dtype=self.dtype,
                          remat=self.remat)


class ResNetStem(nn.Module):
    """7x7/2 conv, BN, ReLU, 3x3/2 max-pool: stride 4, 64 channels."""
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = conv(64, 7, self.dtype, "conv", stride=2)(x)
        x = nn.relu(batch_norm(train, self.dtype, "bn")(x))
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class ResNetEncoder(nn.Module):
    """Stem + layer1..layer3. Returns {"stem", "layer1", "layer2", "layer3"} features.

    Strides 4, 4, 8, 16 (layer3 is stride 8 when ``output_stride == 8``).
    """
    depth: int = 50
    output_stride: int = 32
    zero_init_residual: bool = True
    dtype: Dtype = jnp.float32
    remat: bool = False  # recompute each block in the backward pass

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        check_resnet_args(self.depth, self.output_stride)
        feats = {"stem": ResNetStem(self.dtype, name="stem")(x.astype(self.dtype), train)}
        y = feats["stem"]
        for stage in STAGE_NAMES[1:4]:
            y = ResNetStage(self.depth, stage, self.output_stride, self.zero_init_residual,
                            self.dtype, self.remat, name=stage)(y, train)
            feats[stage] = y
        return feats


class ResNetLayer4(nn.Module):
    """layer4, applied to the layer3 features: stride 32, 16 or 8 per ``output_stride``."""
    depth: int = 50
    output_stride: int = 32
    zero_init_residual: bool = True
    dtype: Dtype = jnp.float32
    remat: bool = False  # recompute each block in the backward pass

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_resnet_args(self.depth, self.output_stride)
        return _run_stage(x.astype(self.dtype), train, depth=self.depth, stage="layer4",
                          output_stride=self.output_stride,
                          zero_init_residual=self.zero_init_residual, dtype=self.dtype,
                          remat=self.remat)


class ResNet(nn.Module):
    """ResNet-18/34/50/101 backbone: image [B, H, W, 3] -> dict of stage features.

    Keys "stem", "layer1".."layer4" with strides 4, 4, 8, 16, 32 at ``output_stride=32``
    (16 and 32 become 16/8 and 8/8 with dilation). Channels 64, then 64/128/256/512 for
    basic blocks or 256/512/1024/2048 for bottlenecks. Parameters live in two subtrees,
    ``encoder`` (``ResNetEncoder``) and ``layer4`` (``ResNetLayer4``).
    ``zero_init_residual`` starts the last BN scale of each block at 0 (each block starts
    as the identity; Goyal et al., "Accurate, Large Minibatch SGD").
    """
    depth: int = 50
    output_stride: int = 32
    zero_init_residual: bool = True
    dtype: Dtype = jnp.float32
    remat: bool = False  # recompute each block in the backward pass

    @property
    def channels(self) -> dict[str, int]:
        mult = 1 if DEPTHS[self.depth][0] == "basic" else 4
        return {"stem": 64, **{n: w * mult for n, w in zip(STAGE_NAMES[1:], STAGE_WIDTHS)}}

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        feats = ResNetEncoder(self.depth, self.output_stride, self.zero_init_residual,
                              self.dtype, self.remat, name="encoder")(x, train)
        feats["layer4"] = ResNetLayer4(self.depth, self.output_stride, self.zero_init_residual,
                                       self.dtype, self.remat,
                                       name="layer4")(feats["layer3"], train)
        return feats
