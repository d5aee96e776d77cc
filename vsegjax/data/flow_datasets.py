"""TFDS builders for optical-flow datasets: MPI-Sintel, FlyingChairs, KITTI 2015.

    python data_prep/sintel.py --manual_dir=~/data/MPI-Sintel-complete --data_dir=DIR
    python data_prep/flying_chairs.py --manual_dir=~/data/FlyingChairs_release --data_dir=DIR
    python data_prep/kitti.py --manual_dir=~/data/kitti --data_dir=DIR [--config=semantics]

Every record is a snippet in the ``features.py`` format (frames, labels, has_label,
label_index, snippet_id), plus, for flow configs:

    flow_fwd    float32 [T-1, H, W, 2]  ground-truth flow frame t -> t+1 (0 where unknown)
    occ_fwd     uint8   [T-1, H, W]     1 where a pixel of frame t has no visible match in t+1
    flow_valid  uint8   [T-1, H, W]     1 where flow_fwd is ground truth
    has_flow    bool    [T-1]           whether pair t has ground truth at all

No dataset here has backward flow, so ``flow_bwd``/``occ_bwd`` are absent (not invented).
H and W are stored per record (KITTI sizes differ between scenes). Per dataset:

* ``sintel`` (configs ``clean``, ``final``: pairs; ``clean_t4``, ``final_t4``: 4 frames):
  windows of consecutive frames of each training sequence, ``stride`` frames apart
  (default ``num_frames - 1``: every pair once; up to ``num_frames - 2`` trailing pairs of
  a sequence are dropped). ``occ_fwd`` = ``occlusions/`` PNG (255 -> 1), ``flow_valid`` =
  not ``invalid/`` PNG. Layouts: the official ``training/{clean,final,flow,occlusions,
  invalid}/<seq>/frame_NNNN.*`` (every pair must have ground truth), or extracts with one
  folder per sequence and pass, ``<seq>_<pass>/frame_NNNN.png`` + ``gt/frame_NNNN.flo``,
  ``gt/occlusions/``, ``gt/invalid/``, where pairs without a ``.flo`` get has_flow False
  and windows holding no ground-truth pair are left out.
  ``snippet_id`` = 10000 * (sequence index, sorted by name) + first frame number.
* ``flying_chairs`` (one config): pairs ``NNNNN_img1.ppm``/``NNNNN_img2.ppm`` +
  ``NNNNN_flow.flo`` (official) or ``N-img0.ppm``/``N-img1.ppm`` + ``N-gt.flo``.
  ``occ_fwd`` is 1 where the flow's target lies outside the image (FlyingChairs has no
  occlusion maps; occlusions between chairs are not marked). ``flow_valid`` is all 1.
  ``FlyingChairs_train_val.txt`` (1 = train, 2 = validation, line n for pair n) splits
  official-named pairs into ``train``/``validation``; without it all pairs are ``train``.
* ``kitti_2015`` (TFDS's name ``kitti`` belongs to its object-detection set): config
  ``flow``: ``training/image_2/X_10.png`` -> ``X_11.png`` with ``flow_occ``/``flow_noc``
  16-bit PNGs decoded as in the devkit (R, G, B = u, v, valid; u = (R - 2^15) / 64).
  ``flow_fwd``/``flow_valid`` come from ``flow_occ``; ``occ_fwd`` = 1 where ``flow_occ`` is
  valid but ``flow_noc`` is not (KITTI's "occluded" pixels). When ``semantic/X_10.png``
  exists, frame 0 carries its labels. Config ``semantics``: the 200 ``semantic/`` images
  as one-frame snippets (no flow keys). Labels are Cityscapes ids mapped to the 19 train
  ids (``CITYSCAPES_TO_TRAIN``), everything else 255.

Record ``i`` of a split is ``info.metadata["keys"][split][i]`` (e.g. ``alley_1/frame_0002``).
Bad inputs (unreadable or truncated images/flows, missing ground truth, size mismatches)
raise ``BadExample`` or FileNotFoundError naming the files; with ``skip_bad`` they are
skipped and reported at the end of the split (``builder.skipped``,
``info.metadata["skipped"]``). TFDS writes into ``*.incomplete*`` folders, so an
interrupted build never looks complete.
"""

from __future__ import annotations

import abc
import dataclasses
import os
import pathlib

import tensorflow_datasets as tfds

from vsegjax.data import flow_files, snippet_builder
from vsegjax.data.flow_files import SnippetSpec
from vsegjax.data.labels import CITYSCAPES_CLASSES


# ---------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------

LISTING = "listing"  # the "split" of problems found while listing files


class _FlowBuilder(snippet_builder.SnippetBuilder, skip_registration=True):
    """A flow dataset: subclasses say how long a snippet is and how to find the files."""

    HOMEPAGE = ""
    CITATION = ""

    @abc.abstractmethod
    def _num_frames(self) -> int:
        """Frames per snippet."""

    def _with_flow(self) -> bool:
        return True

    def _num_classes(self) -> int | None:
        return None

    @abc.abstractmethod
    def _description(self) -> str:
        """The dataset description for its DatasetInfo."""

    @abc.abstractmethod
    def _find(self, root: pathlib.Path, report: flow_files.Report
              ) -> dict[str, list[SnippetSpec]]:
        """split -> the snippets found under the manual folder ``root``."""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=self._description(),
            # H and W per record: KITTI scenes differ in size.
            features=snippet_builder.snippet_features(
                self._num_frames(), frame_index=False,
                flow=("fwd", "valid") if self._with_flow() else ()),
            supervised_keys=None,
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        root = self._manual_root(dl_manager)
        self.info.metadata["keys"] = {}
        splits = self._find(root, lambda key, error: self._skip(LISTING, key, error))
        if LISTING in self.skipped:
            self.info.metadata["skipped"][LISTING] = self.skipped[LISTING]
            self.progress(snippet_builder.format_report(self.title, self.skipped))
        if not any(splits.values()):
            raise FileNotFoundError(f"{self.title}: no snippets found in {root}; "
                                    f"{self.EXPECTED}")
        return {split: self._generate_examples(split, specs) for split, specs in splits.items()}

    def _generate_examples(self, split: str, specs: list[SnippetSpec]):
        keys = self.info.metadata["keys"].setdefault(split, [])
        num_classes = self._num_classes()
        for spec, example in self._write(split, specs, lambda s: _load(s, num_classes),
                                         what=lambda s: s.key):
            keys.append(spec.key)
            yield spec.key, example


def _load(spec: SnippetSpec, num_classes: int | None):
    # Looked up at call time so tests can patch ``flow_files.load_snippet``.
    return flow_files.load_snippet(spec, num_classes)


@dataclasses.dataclass(eq=False)
class SintelConfig(tfds.core.BuilderConfig):
    """pass_name: "clean" or "final"; num_frames per snippet; stride between window
    starts (None: num_frames - 1, so consecutive snippets share one frame)."""

    pass_name: str = "clean"
    num_frames: int = 2
    stride: int | None = None


def sintel_config(pass_name: str = "clean", num_frames: int = 2,
                  stride: int | None = None) -> SintelConfig:
    """A Sintel config; its name encodes the options ("clean", "final_t4", "clean_t3s1")."""
    if pass_name not in flow_files.SINTEL_PASSES:
        raise ValueError(f"Sintel pass_name must be one of {flow_files.SINTEL_PASSES}; got {pass_name!r}")
    if not isinstance(num_frames, int) or num_frames < 2:
        raise ValueError(f"Sintel num_frames must be an integer >= 2; got {num_frames!r}")
    if stride is not None and (not isinstance(stride, int) or stride < 1):
        raise ValueError(f"Sintel stride must be an integer >= 1 or None; got {stride!r}")
    if stride == num_frames - 1:
        stride = None
    name = pass_name + (f"_t{num_frames}" if num_frames != 2 else "")
    if stride is not None:
        name += f"s{stride}"
    if name in _SINTEL_CONFIGS:  # TFDS refuses a second config of a registered name
        return _SINTEL_CONFIGS[name]
    return SintelConfig(name=name, pass_name=pass_name, num_frames=num_frames, stride=stride,
                        description=f"{pass_name} pass, {num_frames} frames per snippet")


_SINTEL_CONFIGS: dict[str, SintelConfig] = {}
for _pass in flow_files.SINTEL_PASSES:
    for _t in (2, 4):
        _cfg = sintel_config(_pass, _t)
        _SINTEL_CONFIGS[_cfg.name] = _cfg


class Sintel(_FlowBuilder):
    """MPI-Sintel training sequences as snippets with forward flow, occlusion and validity."""

    name = "sintel"
    BUILDER_CONFIGS = list(_SINTEL_CONFIGS.values())  # clean, clean_t4, final, final_t4
    DEFAULT_CONFIG_NAME = "clean"
    EXPECTED = flow_files.SINTEL_EXPECTED
    MANUAL_DOWNLOAD_INSTRUCTIONS = flow_files.SINTEL_EXPECTED + " (http://sintel.is.tue.mpg.de/)."
    HOMEPAGE = "http://sintel.is.tue.mpg.de/"
    CITATION = ("Butler, Wulff, Stanley, Black. A naturalistic open source movie for optical "
                "flow evaluation. ECCV 2012.")

    def _num_frames(self):
        return self.builder_config.num_frames

    def _description(self):
        cfg = self.builder_config
        return (f"MPI-Sintel {cfg.pass_name} pass, {cfg.num_frames}-frame snippets; occ_fwd "
                f"from occlusions/, flow_valid = not invalid/.")

    def _find(self, root, report):
        cfg = self.builder_config
        stride = cfg.stride if cfg.stride is not None else cfg.num_frames - 1
        return flow_files.find_sintel(root, cfg.pass_name, cfg.num_frames, stride, report)


class FlyingChairs(_FlowBuilder):
    """FlyingChairs pairs with forward flow; occ_fwd = flow target outside the image."""

    name = "flying_chairs"
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="default", description="all pairs")]
    EXPECTED = flow_files.CHAIRS_EXPECTED
    MANUAL_DOWNLOAD_INSTRUCTIONS = flow_files.CHAIRS_EXPECTED + (
        " (https://lmb.informatik.uni-freiburg.de/resources/datasets/FlyingChairs.en.html).")
    HOMEPAGE = "https://lmb.informatik.uni-freiburg.de/resources/datasets/FlyingChairs.en.html"
    CITATION = ("Dosovitskiy et al. FlowNet: Learning optical flow with convolutional "
                "networks. ICCV 2015.")

    def _num_frames(self):
        return 2

    def _description(self):
        return ("FlyingChairs pairs; occ_fwd = 1 where the flow target leaves the image "
                "(no occlusion ground truth); flow_valid all 1.")

    def _find(self, root, report):
        return flow_files.find_flying_chairs(root, report)


@dataclasses.dataclass(eq=False)
class KittiConfig(tfds.core.BuilderConfig):
    kind: str = "flow"  # "flow" or "semantics"


class Kitti(_FlowBuilder):
    """KITTI 2015: flow pairs (``flow``) or the 200 semantic images (``semantics``)."""

    name = "kitti_2015"  # "kitti" is TFDS' own object-detection dataset
    BUILDER_CONFIGS = [
        KittiConfig(name="flow", kind="flow", description="image_2 _10 -> _11 with flow"),
        KittiConfig(name="semantics", kind="semantics",
                    description="the 200 semantic images, 19 Cityscapes train ids"),
    ]
    DEFAULT_CONFIG_NAME = "flow"
    EXPECTED = flow_files.KITTI_EXPECTED
    MANUAL_DOWNLOAD_INSTRUCTIONS = flow_files.KITTI_EXPECTED + (
        " (https://www.cvlibs.net/datasets/kitti/eval_scene_flow.php).")
    HOMEPAGE = "https://www.cvlibs.net/datasets/kitti/eval_scene_flow.php"
    CITATION = ("Menze, Geiger. Object scene flow for autonomous vehicles. CVPR 2015. "
                "Alhaija et al. Augmented reality meets computer vision. IJCV 2018.")

    def _num_frames(self):
        return 2 if self.builder_config.kind == "flow" else 1

    def _with_flow(self):
        return self.builder_config.kind == "flow"

    def _num_classes(self):
        return len(CITYSCAPES_CLASSES)

    def _description(self):
        return (f"KITTI 2015 {self.builder_config.kind}; labels: Cityscapes ids -> 19 train "
                f"ids {list(CITYSCAPES_CLASSES)}, others 255. flow_fwd/flow_valid from "
                f"flow_occ; occ_fwd = valid in flow_occ but not in flow_noc.")

    def _find(self, root, report):
        return flow_files.find_kitti(root, self.builder_config.kind, report)


BUILDERS = {cls.name: cls for cls in (Sintel, FlyingChairs, Kitti)}


def make_builder(name: str, data_dir: str, config: str | tfds.core.BuilderConfig | None = None,
                 **kwargs) -> _FlowBuilder:
    """The builder ``name`` ("sintel", "flying_chairs", "kitti_2015") for ``config``."""
    if name not in BUILDERS:
        raise ValueError(f"unknown flow dataset {name!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[name](config=config, data_dir=os.path.expanduser(data_dir), **kwargs)


def build(name: str, data_dir: str, manual_dir: str | os.PathLike,
          config: str | tfds.core.BuilderConfig | None = None, *, skip_bad: bool = False,
          num_workers: int | None = None) -> _FlowBuilder:
    """Builds ``name``/``config`` from the raw files in ``manual_dir`` unless already built."""
    builder = make_builder(name, data_dir, config, skip_bad=skip_bad, num_workers=num_workers)
    return snippet_builder.prepare(builder, manual_dir)
