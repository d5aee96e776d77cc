"""Inference on videos: label propagation, Warp-Refine, auto-labelling a user's frames."""
