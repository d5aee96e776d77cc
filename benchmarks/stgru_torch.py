"""The STGRU step (GRFP eqs. 2-6) written plainly in PyTorch, for benchmarks/stgru.py.

This is what a user would write by hand: ``conv2d`` for each convolution and
``grid_sample`` for the warps, NCHW, with vsegjax's conventions (backward warp, zero
padding outside the image, inputs centred by 1/C). It takes vsegjax's parameters (HWIO
kernels) so the two run identical equations with the same weights. torch is a
benchmark-only extra (``pip install -e '.[convert]'``), not a dependency.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def torch_params(params: dict) -> dict[str, torch.Tensor]:
    """vsegjax's STGRU parameters (HWIO kernels) as torch tensors (OIHW kernels)."""
    out = {}
    for name, value in params.items():
        a = np.array(value, np.float32)  # a writable copy for torch.from_numpy
        out[name] = torch.from_numpy(a.transpose(3, 2, 0, 1).copy() if a.ndim == 4 else a)
    return out


def flow_grid(flow: torch.Tensor) -> torch.Tensor:
    """[B,2,H,W] pixel flow -> grid_sample's [B,H,W,2] grid in [-1, 1] (align_corners)."""
    _, _, h, w = flow.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=flow.dtype), torch.arange(w, dtype=flow.dtype),
                            indexing="ij")
    gx = 2.0 * (xs + flow[:, 0]) / (w - 1) - 1.0
    gy = 2.0 * (ys + flow[:, 1]) / (h - 1) - 1.0
    return torch.stack([gx, gy], dim=-1)


def grid_warp(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def stgru_step(p: dict[str, torch.Tensor], h_prev: torch.Tensor, x: torch.Tensor,
               frame: torch.Tensor, prev_frame: torch.Tensor, flow: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(h_t, logits_t, r_t), NCHW, for NCHW inputs; flow [B,2,H,W] from frame t to t-1."""
    c = x.shape[1]
    pad = p["W_xh"].shape[-1] // 2
    x, h_prev = x - 1.0 / c, h_prev - 1.0 / c
    grid = flow_grid(flow)
    w = grid_warp(h_prev, grid)                                                          # (2)
    i_diff = frame - grid_warp(prev_frame, grid)
    r = 1.0 - torch.tanh(torch.abs(F.conv2d(i_diff, p["W_ir"], p["b_r"], padding=pad)))  # (3)
    rw = r * w
    h_tilde = F.conv2d(x, p["W_xh"], padding=pad) + F.conv2d(rw, p["W_hh"], padding=pad)  # (4)
    z = torch.sigmoid(F.conv2d(x, p["W_xz"], padding=pad) + F.conv2d(rw, p["W_hz"], padding=pad)
                      + p["b_z"][None, :, None, None])                               # (5)
    logits = p["lambda"] * (1.0 - z) * rw + z * h_tilde                              # (6)
    return torch.softmax(logits, dim=1), logits, r
