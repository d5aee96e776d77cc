"""VPLR: "Improving Semantic Segmentation via Video Propagation and Label Relaxation"
(CVPR 2019; ``METHODS.md`` section 3 fills in the summary's gaps).

  sdc_model.py   SDC-Net style video reconstruction: motion vectors and per-pixel kernels
                 sampling the previous frame ("spatially-displaced convolution")
  sdc_losses.py  its self-supervised reconstruction losses
  sdc.py         ``SDCTask`` (training it on unlabelled video), its report, and its motion
                 as a flow provider for propagation
  config.py      the ``vplr`` and ``sdc`` blocks, with their defaults
  task.py        ``VPLRTask``: the segmenter on labelled frames plus label- or jointly-
                 propagated pairs at +-k frames, with boundary label relaxation
                 (``vsegjax.losses.relaxation``) and class-uniform sampling
                 (``vsegjax.data.class_uniform``), shared with every method
"""
