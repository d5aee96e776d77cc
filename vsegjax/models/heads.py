"""Segmentation heads: stage-feature dict -> class logits at the feature resolution.

Every head takes the dict a backbone returns ("layer1" at stride 4, "layer4" at the
output stride) and ``train``; the segmenter upsamples the logits to the input size.

* ``PSPHead``: pyramid pooling module of "Pyramid Scene Parsing Network" (PSPNet), the head
  used with the GRFP and EFC papers' static networks.
* ``DeepLabV3PlusHead``: ASPP + decoder of "Encoder-Decoder with Atrous Separable
  Convolution for Semantic Image Segmentation" (DeepLabv3+), with regular (not separable)
  convolutions as is usual on a ResNet.
* ``SimpleHead``: a 1x1 conv classifier, for tests and the small CPU network.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
Features = Mapping[str, jax.Array]


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Bilinear resize of [B, H, W, C] to ``size`` (half-pixel centres, no anti-aliasing)."""
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    return jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), method="bilinear",
                            antialias=False)


def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] averaging weights of PyTorch's adaptive average pooling.

    Output bin i averages input rows floor(i * in / out) .. ceil((i + 1) * in / out) - 1,
    so bins overlap when ``out_size`` does not divide ``in_size``.
    """
    m = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)  # ceil
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x: jax.Array, output_size: int | tuple[int, int]) -> jax.Array:
    """Adaptive average pooling of [B, H, W, C] to [B, h, w, C] (``AdaptiveAvgPool2d``)."""
    h, w = (output_size, output_size) if isinstance(output_size, int) else output_size
    mh = jnp.asarray(adaptive_pool_matrix(x.shape[1], h), x.dtype)
    mw = jnp.asarray(adaptive_pool_matrix(x.shape[2], w), x.dtype)
    return jnp.einsum("ih,jw,bhwc->bijc", mh, mw, x)


class ConvBNReLU(nn.Module):
    """Conv (no bias) + BatchNorm + ReLU with 'same' padding (dilation-aware)."""
    features: int
    kernel_size: int = 1
    dilation: int = 1
    stride: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        pad = self.dilation * (self.kernel_size // 2)
        x = nn.Conv(self.features, (self.kernel_size,) * 2, strides=(self.stride,) * 2,
                    padding=((pad, pad), (pad, pad)), kernel_dilation=(self.dilation,) * 2,
                    use_bias=False, dtype=self.dtype, name="conv")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, name="bn")(x)
        return nn.relu(x)


def _classifier(num_classes: int, dtype: Dtype) -> nn.Conv:
    return nn.Conv(num_classes, (1, 1), dtype=dtype, name="classifier")


def _dropout(x: jax.Array, rate: float, train: bool) -> jax.Array:
    """Channel dropout (whole feature maps, like PyTorch's Dropout2d); needs a 'dropout' rng."""
    if rate <= 0.0:
        return x
    return nn.Dropout(rate, broadcast_dims=(1, 2), deterministic=not train)(x)


def _feature(features: Features, key: str, head: str) -> jax.Array:
    if key not in features:
        raise ValueError(f"{head} needs the backbone feature {key!r}; got {sorted(features)}")
    return features[key]


class SimpleHead(nn.Module):
    """1x1 conv classifier on one feature map (default: the last, "layer4")."""
    num_classes: int
    feature: str = "layer4"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: Features, train: bool = False) -> jax.Array:
        x = _feature(features, self.feature, "SimpleHead")
        return _classifier(self.num_classes, self.dtype)(x.astype(self.dtype))


class PSPHead(nn.Module):
    """Pyramid pooling module + classifier (PSPNet, Zhao et al. 2017).

    For each bin size n in ``pool_sizes``: adaptive average pool to n x n, 1x1 conv + BN +
    ReLU to ``level_channels`` (default: input channels / number of levels, as in the
    paper), bilinear upsample. Concatenated with the input, then 3x3 conv + BN + ReLU to
    ``channels``, channel dropout, 1x1 classifier.
    """
    num_classes: int
    pool_sizes: Sequence[int] = (1, 2, 3, 6)
    channels: int = 512
    level_channels: int | None = None
    dropout: float = 0.1
    feature: str = "layer4"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: Features, train: bool = False) -> jax.Array:
        x = _feature(features, self.feature, "PSPHead").astype(self.dtype)
        size = x.shape[1:3]
        level_ch = self.level_channels or max(1, x.shape[-1] // len(self.pool_sizes))
        levels = [x]
        for n in self.pool_sizes:
            y = adaptive_avg_pool(x, n)
            y = ConvBNReLU(level_ch, dtype=self.dtype, name=f"pool{n}")(y, train)
            levels.append(resize_bilinear(y, size))
        x = jnp.concatenate(levels, axis=-1)
        x = ConvBNReLU(self.channels, 3, dtype=self.dtype, name="bottleneck")(x, train)
        x = _dropout(x, self.dropout, train)
        return _classifier(self.num_classes, self.dtype)(x)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabv3): 1x1, 3x3 at each rate, image pooling."""
    rates: Sequence[int] = (6, 12, 18)
    channels: int = 256
    dropout: float = 0.1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        branches = [ConvBNReLU(self.channels, dtype=self.dtype, name="conv1x1")(x, train)]
        for i, r in enumerate(self.rates):  # names by position: the rates scale with OS
            branches.append(
                ConvBNReLU(self.channels, 3, dilation=r, dtype=self.dtype,
                           name=f"atrous{i}")(x, train))
        pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
        pooled = ConvBNReLU(self.channels, dtype=self.dtype, name="image_pool")(pooled, train)
        branches.append(jnp.broadcast_to(pooled, (*x.shape[:3], self.channels)))
        x = jnp.concatenate(branches, axis=-1)
        x = ConvBNReLU(self.channels, dtype=self.dtype, name="project")(x, train)
        return _dropout(x, self.dropout, train)


class DeepLabV3PlusHead(nn.Module):
    """ASPP on the high-level feature + decoder fusing the stride-4 low-level feature.

    ``aspp_rates`` are the rates at output stride 16 (the paper's (6, 12, 18)); they are
    scaled by ``16 / output_stride`` (doubled at OS8, halved at OS32, at least 1), so
    ``output_stride`` must be the backbone's. Decoder: low-level 1x1 conv to
    ``low_level_channels``, concatenated with the upsampled ASPP output, two 3x3 conv + BN
    + ReLU at ``channels``, 1x1 classifier. Output at the low-level feature's resolution.
    """
    num_classes: int
    output_stride: int = 16
    aspp_rates: Sequence[int] = (6, 12, 18)
    channels: int = 256
    low_level_channels: int = 48
    dropout: float = 0.1
    feature: str = "layer4"
    low_level_feature: str = "layer1"
    dtype: Dtype = jnp.float32

    @property
    def scaled_rates(self) -> tuple[int, ...]:
        return tuple(max(1, (r * 16) // self.output_stride) for r in self.aspp_rates)

    @nn.compact
    def __call__(self, features: Features, train: bool = False) -> jax.Array:
        x = _feature(features, self.feature, "DeepLabV3PlusHead").astype(self.dtype)
        low = _feature(features, self.low_level_feature, "DeepLabV3PlusHead")
        x = ASPP(self.scaled_rates, self.channels, self.dropout, self.dtype, name="aspp")(
            x, train)
        low = ConvBNReLU(self.low_level_channels, dtype=self.dtype, name="low_level")(
            low.astype(self.dtype), train)
        x = jnp.concatenate([resize_bilinear(x, low.shape[1:3]), low], axis=-1)
        x = ConvBNReLU(self.channels, 3, dtype=self.dtype, name="decoder1")(x, train)
        x = ConvBNReLU(self.channels, 3, dtype=self.dtype, name="decoder2")(x, train)
        return _classifier(self.num_classes, self.dtype)(x)
