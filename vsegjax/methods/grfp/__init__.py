"""GRFP: "Semantic Video Segmentation by Gated Recurrent Flow Propagation" (CVPR 2018).

  stgru_equations.py  one STGRU step, eqs. (2)-(6), fused and unfused (sec. 3.1)
  stgru.py            the cell and the forward / backward / forward-backward recurrent
                      model as a ``lax.scan`` over the window (secs. 3.1-3.3)
  model.py            the video model: the static net on every frame, then the STGRU
                      (fig. 2)
  transforms.py       classical flow computed in the input workers (sec. 4, Farneback)
  config.py           the ``grfp`` and ``flow`` blocks, with their defaults
  task.py             ``GRFPTask``: stage 2, the NLL on the labelled frame only (sec. 3.3),
                      and the streaming predictor ``segment``/``export`` run
  report.py           static vs forward vs forward-backward: class mIoU, temporal
                      consistency (sec. 4)
"""
