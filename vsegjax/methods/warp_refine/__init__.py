"""Warp-Refine: "Warp-Refine Propagation: Semi-Supervised Auto-labeling via
Cycle-consistency" (ICCV 2021; the abstract, completed in ``METHODS.md`` section 4).

  model.py       the refiner: new frame + warped label + semantic prior -> corrected label
  losses.py      cycle consistency (forward k steps and back) and direct supervision
  transforms.py  windows of k + 1 frames from the labelled frame
  config.py      the ``warp_refine`` block and the report's ``eval`` fields, with their
                 defaults
  task.py        ``WarpRefineTask``: the refiner trained by cycle consistency
  video.py       auto-labelling one video: train the refiner on it, label every frame
                 (``vsegjax.autolabel --method=warp_refine``)
  report.py      mIoU of propagated labels vs distance k for copy, flow and warp_refine
                 (also a command for DAVIS / CamVid)
"""
