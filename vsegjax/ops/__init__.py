"""Pure array functions on NHWC images and [..., H, W, 2] flows (x, y in pixels)."""

from vsegjax.ops.warp import check_flow, pixel_grid, sample, warp, warp_nearest

__all__ = ["check_flow", "pixel_grid", "sample", "warp", "warp_nearest"]
