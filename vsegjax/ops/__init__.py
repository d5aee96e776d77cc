"""Pure array functions on NHWC images and [..., H, W, 2] flows (x, y in pixels).

All are jit-able, differentiable and batched over leading dimensions.
"""

from vsegjax.ops.conv import conv2d_same
from vsegjax.ops.correlation import correlation
from vsegjax.ops.flow import compose_flow, resize_flow
from vsegjax.ops.gradients import edge_aware_flow_gradients, edge_aware_weights, image_gradients
from vsegjax.ops.occlusion import fb_consistency_mask, out_of_image_mask
from vsegjax.ops.ssim import ssim
from vsegjax.ops.warp import check_flow, pixel_grid, sample, warp, warp_nearest

__all__ = [
    "check_flow", "compose_flow", "conv2d_same", "correlation", "edge_aware_flow_gradients",
    "edge_aware_weights", "fb_consistency_mask", "image_gradients", "out_of_image_mask",
    "pixel_grid", "resize_flow", "sample", "ssim", "warp", "warp_nearest",
]
