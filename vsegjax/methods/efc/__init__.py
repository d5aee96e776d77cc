"""EFC: "Every Frame Counts: Joint Learning of Video Segmentation and Optical Flow" (AAAI 2020).

  model.py       one encoder, the segmentation decoder and the flow decoder with
                 occlusion (sec. 3.1, fig. 2)
  losses.py      L_seg, L_cons (eq. 2), the occlusion target and loss (eqs. 3-4), L_pm
                 (eqs. 5-6), L_sm (eq. 7), their sum (eq. 9)
  pairs.py       training pairs (I_i, I_{i+dt}), dt in [1, 5], drawn inside the step
                 (sec. 3.2)
  transforms.py  which labels a pair may use (labelled and unlabelled frames, sec. 3.2)
  config.py      the ``efc`` block and EFC's ``eval.farneback``, with their defaults
  task.py        ``EFCTask``: the joint step; inference uses the segmentation branch alone
  report.py      mIoU against the static baseline, flow EPE against OpenCV (sec. 4)
  flow_real.py   the learned flow on Sintel / FlyingChairs (a command)
"""
