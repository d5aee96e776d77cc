"""vsegjax: semantic video segmentation with optical-flow propagation in JAX/Flax."""

__version__ = "0.1.0"
