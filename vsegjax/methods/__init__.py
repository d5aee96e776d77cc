"""The methods, one package each, on the core (``vsegjax.core``), which knows none of them.

  static/       a static segmenter on single frames (the baseline every method wraps)
  grfp/         GRFP: the STGRU along optical flow (Nilsson & Sminchisescu, CVPR 2018)
  efc/          EFC: segmentation and unsupervised flow learned jointly (Ding et al., AAAI 2020)
  vplr/         VPLR: SDC video reconstruction, joint propagation, label relaxation
                (Zhu et al., CVPR 2019)
  warp_refine/  Warp-Refine: auto-labelling by warping labels and refining them
                (Ganeshan et al., ICCV 2021)

Each package holds its task (``task.py``, a ``core.task.Task``), its report, and its own
model wiring, losses and host transforms; its docstring says which paper section each
file implements. ``REGISTRY`` names their tasks for the runner: a new method is a new
package and one line here.
"""

from vsegjax.core.registry import Method, Registry

REGISTRY = Registry({
    "static": Method("vsegjax.methods.static.task:StaticSegmentationTask",
                     "vsegjax.methods.static.task:report"),
    "grfp": Method("vsegjax.methods.grfp.task:GRFPTask", "vsegjax.methods.grfp.report:report"),
    "efc": Method("vsegjax.methods.efc.task:EFCTask", "vsegjax.methods.efc.report:report"),
    "sdc": Method("vsegjax.methods.vplr.sdc:SDCTask", "vsegjax.methods.vplr.sdc:report"),
    "vplr": Method("vsegjax.methods.vplr.task:VPLRTask", "vsegjax.methods.vplr.task:report"),
    "warp_refine": Method("vsegjax.methods.warp_refine.task:WarpRefineTask",
                          "vsegjax.methods.warp_refine.report:report"),
})
