"""Shared Flax (Linen) models: static segmenters (backbones + heads) and flow networks.

A method's own modules (GRFP's STGRU, EFC's joint model, VPLR's SDC, Warp-Refine's
refiner) live in its package under ``vsegjax.methods``.

Static segmenters map images [B, H, W, 3] in [0, 1] to logits [B, H, W, C] at the input
resolution; build one from a config with ``make_segmenter``.
"""

from vsegjax.models.heads import (ASPP, ConvBNReLU, DeepLabV3PlusHead, PSPHead, SimpleHead,
                                  adaptive_avg_pool, resize_bilinear)
from vsegjax.models.resnet import ResNet, ResNetEncoder, ResNetLayer4
from vsegjax.models.segmenter import (IMAGENET_MEAN, IMAGENET_STD, Segmenter, SmallBackbone,
                                      SmallEncoder, SmallSegNet, default_config, make_segmenter,
                                      normalize_images)
from vsegjax.models.flownet import FlowDecoder, FlowEncoder, FlowNetS
from vsegjax.models.flow_providers import (DatasetFlow, FlowProvider, LearnedFlow, OpenCVFlow,
                                           make_flow_provider)
