"""EFC on the synthetic dataset, sized for a 2-core CPU, with the paper's ablations as variants.

    python -m vsegjax.main --config=configs/efc_synthetic.py --workdir=runs/efc_synthetic
    python -m vsegjax.main --config=configs/efc_synthetic.py:ul_oe --workdir=runs/efc_ul_oe

Stages: ``static`` trains the segmenter alone on the labelled frames (the baseline), then
``efc`` trains the joint model on pairs from the same snippets (same labelled frames: the
annotated frame of each snippet; every other frame is unlabelled), 1500 steps each, and
``eval_metrics.json`` holds both with the flow baselines. With the paper's full eq. 9
(the default) it reaches class mIoU 0.437 against the static 0.535 and flow EPE 0.737
against Farnebäck's 0.360 (docs/efc.md: the paper's gain is not reproduced here; the
rows there give the settings that do keep the static mIoU).

``static_continued`` (off) continues the static segmenter for as many steps again: with
``--config.stages.static_continued.enabled=True --config.stages.efc.init_from=static``
EFC fine-tunes the trained segmenter, as the paper does with its PSPNet, against a
baseline that has seen as many steps. Variants (``:name``), the rows of the paper's
Tables 1 and 2:

  Table 1 (segmentation)             Table 2 (flow)
  tcc_fix       fixed pretrained     ul          flow branch alone, L_pm + L_sm
                FlowNetS, 1 pair     ul_oe       + occlusion estimation (L_occ, O_est)
  tcc_single    L_cons, 1 pair, no   ul_tc       + segmentation and L_cons, no occlusion
                occlusion masks      ul_oe_tc    + both, no O_seg
  tcc_single_om + occlusion masks    full        everything (the default)
  tcc_multi_om  + 4 pairs per snippet
  full          + unlabelled snippets (synthetic_video/extra)
"""

import ml_collections

from configs import common
from vsegjax.methods.efc import config as efc_config

VARIANTS = ("full", "tcc_fix", "tcc_single", "tcc_single_om", "tcc_multi_om",
            "ul", "ul_oe", "ul_tc", "ul_oe_tc")


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"configs/efc_synthetic.py: unknown variant {variant!r}; choose from "
                         f"{list(VARIANTS)}")
    # 3e-4: at 3e-3 the flow decoder settles on a near-constant flow (EPE above the zero
    # flow's after 400 steps; 0.48 at 3e-4, overfitting 8 snippets).
    c = common.base(num_steps=1500, learning_rate=3e-4)
    c.variant = variant
    c.input.batch_size = 4
    c.train.eval_every = 500

    c.efc = efc_config.efc_block(
        unlabelled_data=common.data("synthetic_video", "extra"))  # +UD: the extra snippets
    c.eval = efc_config.eval_block(num_panels=8, farneback=True)
    # The baseline: the same segmenter alone, same labelled frames (input.label_frame is
    # "annotated"), steps and optimiser; EFC starts fresh beside it.
    stages = [("static", common.stage("static")),
              ("static_continued", common.stage("static", init_from="static", enabled=False)),
              ("efc", common.stage("efc", init_from=""))]
    _apply_variant(c, variant, stages)
    return common.set_stages(c, *stages)


def _apply_variant(c: ml_collections.ConfigDict, variant: str, stages: list) -> None:
    e, w = c.efc, c.efc.loss_weights
    no_occlusion = dict(occlusion_in_cons=False, occlusion_in_pm=False, seg_occlusion=False)
    if variant.startswith("tcc") or variant in ("ul", "ul_oe", "ul_tc", "ul_oe_tc"):
        e.unlabelled_data = None
    if variant in ("tcc_fix", "tcc_single", "tcc_single_om"):
        e.pairs_per_snippet = 1
    if variant in ("tcc_single", "ul", "ul_tc"):
        e.update(no_occlusion)
        w.L_occ = 0.0
    if variant == "tcc_fix":
        # Stage 1: a separate FlowNetS learns flow unsupervised; stage 2 keeps it fixed
        # and trains the segmenter with L_seg + L_cons through its flow.
        e.flow_branch, e.fixed_flow = "separate", True
        e.update(no_occlusion)
        for term in ("L_occ", "L_pm", "L_sm"):
            w[term] = 0.0
        pretrain = common.stage(
            "efc", init_from="", train=dict(eval_every=0),
            efc=dict(mode="flow_only", fixed_flow=False, seg_occlusion=False,
                     occlusion_in_pm=True, loss_weights=dict(L_occ=0.4, L_pm=1.0, L_sm=0.5)))
        stages.insert(2, ("flow_pretrain", pretrain))
        stages[-1][1].init_from = "flow_pretrain"
        stages[-1][1].optimizer = ml_collections.ConfigDict(dict(frozen=("flow",)))
    if variant in ("ul", "ul_oe"):
        e.mode = "flow_only"  # no segmentation, so no static baseline either
        stages[0][1].enabled = False
        e.seg_occlusion = False
        w.L_seg = w.L_cons = 0.0
    if variant == "ul_oe":
        e.occlusion_in_pm = True
    if variant == "ul_oe_tc":
        e.seg_occlusion = False
