"""Label / joint propagation, Warp-Refine's cycle loss and the propagation evaluation."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vsegjax.data import synthetic
from vsegjax.methods.warp_refine import report as pe
from vsegjax.models import propagate as prop
from vsegjax.methods.warp_refine import video as wr
from vsegjax.methods.warp_refine import losses as wrl
from vsegjax.methods.warp_refine.model import Refiner, WarpRefineModel, warp_probs
from vsegjax.models.segmenter import SmallSegNet

DAVIS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "davis2016"


def _translation_video(n=6, h=16, w=24, dx=2):
    """A textured image moving right by ``dx`` px per frame; exact constant flows."""
    rng = np.random.default_rng(0)
    base = rng.uniform(size=(h, w + n * dx, 3)).astype(np.float32)
    frames = np.stack([base[:, (n - t) * dx:(n - t) * dx + w] for t in range(n)])
    labels = (np.arange(w + n * dx) // 5 % 3).astype(np.uint8)[None].repeat(h, 0)
    labels = np.stack([labels[:, (n - t) * dx:(n - t) * dx + w] for t in range(n)])
    fwd = np.broadcast_to(np.float32([dx, 0]), (n - 1, h, w, 2)).copy()  # t -> t+1
    return frames, labels, fwd, -fwd


def test_composed_flows_follow_a_translation_both_ways():
    frames, labels, fwd, bwd = _translation_video()
    out = prop.flows_to_anchor(2, fwd, bwd, range(6))
    for t, f in out.items():
        # Away from the left edge (where the composition samples outside), F_{t->2} is
        # (2 - t) * dx... in the convention "t's grid into 2's": x_2 = x_t - (t - 2) dx.
        np.testing.assert_allclose(f[:, 12:], np.broadcast_to([-(t - 2) * 2.0, 0],
                                                              f[:, 12:].shape), atol=1e-5)
    got = prop.propagate_labels(labels[2], 2, fwd, bwd, range(6))
    for t in range(6):
        inside = slice(max(0, (t - 2) * 2), 24 + min(0, (t - 2) * 2))
        np.testing.assert_array_equal(got[t][:, inside], labels[t][:, inside], err_msg=str(t))
        assert (got[t] != 255).all()  # border clamping labels every pixel


def test_copy_source_and_joint_propagation():
    frames, labels, fwd, bwd = _translation_video()
    zf, zb = prop.video_flows(frames, "copy")
    assert zf.shape == fwd.shape and not zf.any() and not zb.any()
    copied = prop.label_video(frames, {0: labels[0], 5: labels[5]}, "copy")
    for t in range(6):
        np.testing.assert_array_equal(copied[t], labels[0 if t <= 2 else 5])
    joint = prop.propagate_joint(frames[1], labels[1], 1, fwd, bwd, [3])
    image, label = joint[3]
    np.testing.assert_allclose(image[:, 4:], frames[3][:, 4:], atol=1e-5)
    np.testing.assert_array_equal(label[:, 4:], labels[3][:, 4:])
    with pytest.raises(ValueError, match="motion source"):
        prop.video_flows(frames, "raft")


def test_flow_propagation_beats_copy_on_synthetic_video():
    cfg = synthetic.SyntheticConfig(height=48, width=96, num_frames=7, seed=3)
    scores = pe.Scores(len(synthetic.CLASSES))
    for i in range(3):
        ex = synthetic.generate_snippet(cfg, "validation", i)
        flows = (ex["flow_fwd"], ex["flow_bwd"])
        pe.score_video(scores, {"copy": pe.copy_method, "flow": pe.flow_method},
                       ex["frames"], dict(enumerate(ex["labels"])), 0, [1, 6], flows)
    miou = scores.miou()
    assert miou["flow"][6] > miou["copy"][6] + 0.05, miou
    assert miou["copy"][1] > miou["copy"][6]


def _step_model(num_classes=3):
    return WarpRefineModel(static=SmallSegNet(num_classes, 8), refiner=Refiner(num_classes, 8, 1))


def test_cycle_loss_is_zero_for_an_identity_refiner_on_a_static_scene():
    rng = np.random.default_rng(1)
    frame = rng.uniform(size=(2, 12, 16, 3)).astype(np.float32)
    frames = jnp.asarray(np.repeat(frame[:, None], 4, axis=1))
    labels0 = jnp.asarray(rng.integers(0, 3, (2, 12, 16)))
    zero = jnp.zeros((2, 3, 12, 16, 2))
    priors = jnp.full((2, 4, 12, 16, 3), 1 / 3)
    identity = lambda frame, probs, flow, prior: warp_probs(probs, flow)  # noqa: E731
    loss, fwd = wrl.cycle_terms(identity, labels0, frames, zero, zero, priors, 3)
    assert float(loss) < 1e-6
    np.testing.assert_array_equal(np.argmax(fwd[:, -1], -1), labels0)
    # A refiner that forgets half the label each step does pay: the loss can fail.
    blur = lambda frame, probs, flow, prior: 0.5 * probs + 0.5 * prior  # noqa: E731
    bad, _ = wrl.cycle_terms(blur, labels0, frames, zero, zero, priors, 3, unroll=False)
    assert float(bad) > 0.9


@pytest.mark.slow
def test_untrained_refiner_is_flow_propagation_and_chain_matches_steps():
    model = _step_model()
    frames, labels, fwd, bwd = _translation_video(n=4, h=16, w=24)
    x, p0 = jnp.asarray(frames[None]), wrl.label_probs(jnp.asarray(labels[:1]), 3)
    v = model.init(jax.random.key(0), x[:, 0], p0, jnp.asarray(bwd[None, 0]))
    step = lambda f, p, fl, pr: model.apply(v, f, p, fl, pr, method=WarpRefineModel.step)  # noqa
    priors = jnp.full((1, 4, 16, 24, 3), 1 / 3)
    out = wrl.chain(step, p0, x, jnp.asarray(bwd[None]), priors)
    unrolled = wrl.chain(step, p0, x, jnp.asarray(bwd[None]), priors, unroll=True)
    np.testing.assert_allclose(out, unrolled, atol=1e-6)
    flow_labels = prop.propagate_labels(labels[0], 0, fwd, bwd, range(4))
    for t in range(1, 4):
        inside = slice(2 * t + 1, 24)
        np.testing.assert_array_equal(np.argmax(out[0, t], -1)[:, inside],
                                      flow_labels[t][:, inside])


def test_video_windows_reindex_flows_for_backward_windows():
    frames, labels, fwd, bwd = _translation_video(n=5)
    it = wr.VideoWindows(frames, {4: labels[4]}, (fwd, bwd), k=3, batch_size=2,
                         crop=(16, 24), seed=0)
    batch = next(it)
    # Only backward windows fit (label on the last frame): frame j -> j+1 moves left.
    np.testing.assert_array_equal(batch["frames"][:, 0], np.stack([frames[4]] * 2))
    np.testing.assert_allclose(batch["flow_fwd"], -2.0 * (np.arange(2) == 0)
                               * np.ones_like(batch["flow_fwd"]), atol=0)
    assert (batch["labels"][:, 0] == labels[4]).all() and (batch["labels"][:, 1:] == 255).all()
    state = it.get_state()
    again = next(it)
    it.set_state(state)
    np.testing.assert_array_equal(next(it)["frames"], again["frames"])


def test_strided_windows_skip_frames_with_composed_flows():
    frames, labels, fwd, bwd = _translation_video(n=9)
    it = wr.VideoWindows(frames, {0: labels[0]}, (fwd, bwd), k=3, batch_size=16,
                         crop=(16, 24), seed=0, strides=(1, 2, 3))
    # Stride 3 needs frame 9 of a 9-frame video: only strides 1 and 2 fit, forward.
    assert sorted(it.windows) == [(0, 1, 1), (0, 1, 2)]
    batch = next(it)
    for row in range(16):
        dx = batch["flow_fwd"][row, 0, 0, 0, 0]
        s = int(round(dx / 2))  # 2 px per frame, composed over s frames
        assert s in (1, 2)
        np.testing.assert_allclose(batch["flow_fwd"][row], np.float32([2 * s, 0]) +
                                   0 * batch["flow_fwd"][row], atol=1e-4)
        np.testing.assert_allclose(batch["flow_bwd"][row][..., 0], -2 * s, atol=1e-4)
        np.testing.assert_array_equal(batch["frames"][row], frames[0:3 * s + 1:s])
    assert {int(round(x / 2)) for x in batch["flow_fwd"][:, 0, 0, 0, 0]} == {1, 2}
    with pytest.raises(ValueError, match="strides"):
        wr.VideoWindows(frames, {0: labels[0]}, (fwd, bwd), k=3, batch_size=2,
                        crop=(16, 24), strides=(0,))


def test_report_writes_json_and_chart(tmp_path):
    result = {"dataset": "x", "ks": [1, 2], "miou": {"copy": {1: 0.9, 2: 0.8},
                                                       "flow": {1: 0.95, 2: 0.9}}}
    pe.write_report(result, str(tmp_path), "test")
    assert json.loads((tmp_path / "propagation.json").read_text())["miou"]["flow"]["2"] == 0.9
    assert (tmp_path / "propagation.png").stat().st_size > 1000
    assert "k=2" in pe.format_table(result["miou"])


@pytest.mark.skipif(not DAVIS.is_dir(), reason="../shared/data/davis2016 not present")
def test_davis_flow_beats_copy(tmp_path):
    result = pe.run_real("davis", str(DAVIS), str(tmp_path), ("copy", "flow"), max_side=128,
                         ks=(5,), max_frames=6)
    assert result["miou"]["flow"][5] > result["miou"]["copy"][5]
    assert set(result["object_iou"]) == {"copy", "flow"}


def test_cycle_windows_start_at_the_labelled_frame():
    """The task's host batch_fn: forward when k frames follow the label, else backward,
    with dataset flows re-indexed for the window's direction."""
    from vsegjax.methods.warp_refine.transforms import CycleWindows

    frames, labels, fwd, bwd = _translation_video(n=5)
    batch = {"frames": np.stack([frames, frames]), "labels": np.stack([labels, labels]),
             "flow_fwd": np.stack([fwd, fwd]), "flow_bwd": np.stack([bwd, bwd]),
             "label_pos": np.asarray([0, 4])}
    out = CycleWindows(k=3, flow="dataset")(batch)
    np.testing.assert_array_equal(out["frames"][0], frames[:4])
    np.testing.assert_array_equal(out["frames"][1], frames[4:0:-1])
    assert (out["flow_fwd"][0][..., 0] == 2).all() and (out["flow_fwd"][1][..., 0] == -2).all()
    assert (out["labels"][:, 1:] == 255).all()
    np.testing.assert_array_equal(out["labels"][1, 0], labels[4])
    with pytest.raises(ValueError, match="warp_refine.k"):
        CycleWindows(k=5, flow="dataset")(batch)


@pytest.mark.slow
def test_refiner_without_prior_trains_on_one_video_and_has_no_segmenter(tmp_path):
    frames, labels, fwd, bwd = _translation_video(n=5)
    task, variables = wr.train_on_video(frames, {0: labels[0]}, 3, (fwd, bwd), str(tmp_path),
                                        steps=2, k=2, crop=(16, 24), prior="none")
    assert "static" not in variables["params"] and "refiner" in variables["params"]
    assert set(task.weights) == {"L_cycle", "L_direct"}  # L_prior dropped: nothing to train
    logits, _ = task.priors(variables, jnp.asarray(frames[None]))
    np.testing.assert_array_equal(logits, 0.0)  # uniform prior
    probs = wr.label_video(task, variables, frames, {0: labels[0]}, (fwd, bwd))
    assert len(probs) == 5 and np.allclose(probs[3].sum(-1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="warp_refine.prior"):
        wr.train_on_video(frames, {0: labels[0]}, 3, (fwd, bwd), str(tmp_path / "b"),
                          steps=1, k=2, crop=(16, 24), prior="static")


@pytest.mark.slow
def test_warp_term_is_zero_at_the_warp_and_pulls_a_drifted_refiner_back():
    """L_warp (KL from plain soft warping to the refined chain) is ~0 for the untrained
    refiner (which is the warp), positive once the refiner deviates, its gradient points
    back towards the warp, and weight 0 leaves the term out."""
    frames, labels, fwd, bwd = _translation_video(n=5)
    windows = wr.VideoWindows(frames, {0: labels[0]}, (fwd, bwd), k=3, batch_size=2,
                              crop=(16, 24), seed=0)
    batch = {k: jnp.asarray(v) for k, v in next(windows).items()}
    cfg = wr.video_config(3, (16, 24), steps=1, k=3, prior="none", warp_weight=1.0)
    task = wr.WarpRefineTask(cfg)
    assert set(task.weights) == {"L_cycle", "L_direct", "L_warp"}
    v = task.init_variables(jax.random.key(0))
    _, (terms, _) = task.loss_fn(v["params"], {}, batch, jax.random.key(1))
    assert float(terms["L_warp"]) < 1e-2  # only the log's eps floor separates them
    # A refiner that pushes every pixel towards class 2 has drifted from the warp.
    params = jax.tree_util.tree_map(lambda x: x, v["params"])
    params["refiner"]["delta"]["bias"] = jnp.float32([0.0, 0.0, 3.0])
    _, (drift, _) = task.loss_fn(params, {}, batch, jax.random.key(1))
    assert float(drift["L_warp"]) > 0.1 > 10 * float(terms["L_warp"])

    def warp_only(p):
        return task.loss_fn(p, {}, batch, jax.random.key(1))[1][0]["L_warp"]
    g = jax.grad(warp_only)(params)["refiner"]["delta"]["bias"]
    assert float(g[2]) > 0 and float(g[0]) < 0 and float(g[1]) < 0  # descent lowers class 2
    off = wr.WarpRefineTask(wr.video_config(3, (16, 24), steps=1, k=3, prior="none"))
    assert "L_warp" not in off.weights
    assert "L_warp" not in off.loss_fn(v["params"], {}, batch, jax.random.key(1))[1][0]
    with pytest.raises(ValueError, match=r"loss_weights: \['L_warp'\] must be >= 0"):
        wr.WarpRefineTask(wr.video_config(3, (16, 24), steps=1, k=3, warp_weight=-1.0))


@pytest.mark.slow
def test_uniform_prior_is_not_a_softmax_of_constants():
    """Inference with ``prior="none"`` must not take the softmax of a constant zero prior:
    XLA constant-folds it over the whole video (77 s instead of 6 s to compile 76 frames at
    180x240: benchmarks/propagate_compile.py)."""
    frames, labels, _, bwd = _translation_video(n=4)
    p0 = wrl.label_probs(jnp.asarray(labels[:1]), 3)
    args = (jnp.asarray(frames[None]), jnp.asarray(bwd[None]))
    softmaxes = {}
    for prior in ("none", "segmenter"):
        task = wr.WarpRefineTask(wr.video_config(3, (16, 24), steps=1, prior=prior))
        v = task.init_variables(jax.random.key(0))
        softmaxes[prior] = str(jax.make_jaxpr(task._propagate)(v, p0, *args)).count(
            "reduce_max")
    # One softmax per refined step (inside the scan body) in both; one more over the
    # segmenter's logits, and none over a uniform prior.
    assert softmaxes["none"] == 1 and softmaxes["segmenter"] == 2, softmaxes


def test_synthetic_videos_shorter_than_the_default_label_index():
    """Bug: videos of <= 4 frames raised (label_index 4 outside the video); the
    autolabel notebook asks for 4."""
    (frames, labels), = pe.synthetic_videos(1, 3, (32, 48))
    assert frames.shape == (3, 32, 48, 3) and sorted(labels) == [0, 1, 2]
    (long_frames, _), = pe.synthetic_videos(1, 6, (32, 48))
    assert long_frames.shape[0] == 6
