"""EFC: pair sampling, the joint model, eq. (9) in full, inference cost, the task end to end."""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vsegjax import ops
from vsegjax.data import synthetic_tfds, transforms
from vsegjax.methods.efc import transforms as efc_transforms
from vsegjax.methods.efc import losses as efc_losses
from vsegjax.methods.efc.model import make_efc_model
from vsegjax.methods.efc import task as efc
from vsegjax.methods.efc import pairs as efc_pairs
from vsegjax import experiments
from vsegjax.models.segmenter import StaticModel

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config(name, variant=None):
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if variant is None else module.get_config(variant)


# --------------------------------------------------------------------------- pairs


@pytest.mark.slow
def test_sampled_pairs_respect_dt_range_labels_and_are_dt_uniform():
    b, p, t = 64, 8, 7
    label_pos = jnp.asarray(np.random.default_rng(0).integers(0, t, b), jnp.int32)
    labelled = jnp.arange(b) % 4 != 0  # every 4th snippet unlabelled
    first, second = efc_pairs.sample_pairs(jax.random.key(1), t, label_pos, labelled, p,
                                           (1, 5), labelled_share=1.0)
    first, second = np.asarray(first), np.asarray(second)
    dt = second - first
    assert dt.min() >= 1 and dt.max() <= 5 and first.min() >= 0 and second.max() < t
    lp = np.asarray(label_pos)[:, None]
    contains = (first == lp) | (second == lp)
    assert contains[np.asarray(labelled)].all()          # share 1: every labelled pair
    assert not contains[~np.asarray(labelled)].all()     # unlabelled snippets: any pair
    # share 0 and many draws: dt uniform over 1..5 (each ~20%), not biased to short dt.
    first, second = efc_pairs.sample_pairs(jax.random.key(2), t, label_pos, labelled, 200,
                                           (1, 5), labelled_share=0.0)
    counts = np.bincount(np.asarray(second - first).ravel(), minlength=6)[1:] / (b * 200)
    np.testing.assert_allclose(counts, 0.2, atol=0.02)


def test_labelled_share_sets_the_fraction_of_pairs_with_the_label():
    b, t = 256, 7
    label_pos = jnp.full((b,), 3, jnp.int32)
    first, second = efc_pairs.sample_pairs(jax.random.key(0), t, label_pos,
                                           jnp.ones((b,), bool), 4, (1, 3), 0.25)
    contains = (np.asarray(first) == 3) | (np.asarray(second) == 3)
    # 25% forced, plus the unforced pairs that contain frame 3 by chance.
    assert 0.3 < contains.mean() < 0.6


def test_candidate_pairs_and_bad_ranges():
    np.testing.assert_array_equal(efc_pairs.candidate_pairs(3, (1, 2)),
                                  [[0, 1], [1, 2], [0, 2]])
    with pytest.raises(ValueError, match="efc.dt_range"):
        efc_pairs.candidate_pairs(5, (0, 2))
    with pytest.raises(ValueError, match="no pair"):
        efc_pairs.candidate_pairs(3, (4, 5))


def test_prepare_snippets_keeps_only_the_annotated_labels():
    labels = np.arange(2 * 4 * 2 * 2).reshape(2, 4, 2, 2) % 5
    batch = {"frames": np.zeros((2, 4, 2, 2, 3)), "labels": labels,
             "label_pos": np.asarray([1, 3]), "has_label": np.ones((2, 4), bool),
             "flow_fwd": np.zeros((2, 3, 2, 2, 2))}
    out = efc_transforms.PrepareSnippets("annotated")(batch)
    assert "flow_fwd" not in out and out["labelled"].all()
    np.testing.assert_array_equal(out["labels"][0, 1], labels[0, 1])
    assert (out["labels"][0, [0, 2, 3]] == 255).all() and (out["labels"][1, :3] == 255).all()
    none = efc_transforms.PrepareSnippets("none")(batch)
    assert (none["labels"] == 255).all() and not none["labelled"].any()
    assert (batch["labels"] == labels).all()  # the input batch is not modified
    bare = efc_transforms.PrepareSnippets("none")({"frames": np.zeros((2, 4, 2, 2, 3))})
    assert bare["labels"].shape == (2, 4, 2, 2) and (bare["labels"] == 255).all()


class _ListIterator:
    def __init__(self, items):
        self.items, self.i = items, 0

    def __next__(self):
        self.i += 1
        return self.items[self.i - 1]

    def get_state(self):
        return {"i": self.i}

    def set_state(self, state):
        self.i = state["i"]


def test_mixed_iterator_concatenates_and_resumes_both_streams():
    lab = [{"x": np.full((2, 3), k)} for k in range(5)]
    unl = [{"x": np.full((1, 3), 10 + k)} for k in range(5)]
    it = transforms.MixedIterator(_ListIterator(lab), _ListIterator(unl))
    first = next(it)
    np.testing.assert_array_equal(first["x"][:, 0], [0, 0, 10])
    state = json.loads(json.dumps(it.get_state()))
    expected = next(it)
    again = transforms.MixedIterator(_ListIterator(lab), _ListIterator(unl))
    again.set_state(state)
    np.testing.assert_array_equal(next(again)["x"], expected["x"])
    bad = transforms.MixedIterator(_ListIterator(lab), _ListIterator([{"x": np.zeros((1, 4))}]))
    with pytest.raises(ValueError, match="field 'x'"):
        next(bad)


# --------------------------------------------------------------------------- model


def _blocks(config):
    return config.model, config.efc


def small_config(flow_branch="shared"):
    c = load_config("efc_synthetic")
    c.model.width = 8
    c.efc.flow_branch = flow_branch
    c.efc.flow.joint_channels = 16
    c.efc.flow.extra_channels = (16,)
    return c


@pytest.mark.slow
@pytest.mark.parametrize("branch", ["shared", "separate"])
def test_model_predicts_both_directions_with_one_set_of_weights(branch):
    model = make_efc_model(*_blocks(small_config(branch)))
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.uniform(size=(2, 32, 48, 3)), jnp.float32)
    b = jnp.asarray(rng.uniform(size=(2, 32, 48, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), a, b)
    ab = model.apply(variables, a, b)
    ba = model.apply(variables, b, a)
    # Rows [B, 2B) of (a, b) are the flow b -> a, i.e. rows [0, B) of (b, a).
    np.testing.assert_allclose(ab["flow"][2:], ba["flow"][:2], atol=1e-5)
    np.testing.assert_allclose(ab["occlusion_full"][2:], ba["occlusion_full"][:2], atol=1e-5)
    assert ab["flow"].shape == (4, 32, 48, 2) and ab["logits"].shape[:3] == (4, 32, 48)
    assert all(0 <= float(o.min()) and float(o.max()) <= 1 for o in ab["occlusion"])
    if branch == "shared":
        # The correlation level's flow has the shared feature's grid (for L_cons).
        assert ab["pyramid"][ab["corr_level"]].shape[1:3] == ab["features"].shape[1:3]
        assert set(variables["params"]) == {"static", "flow"}
        hidden = variables["params"]["flow"]["occ1_hidden"]["kernel"]
        assert hidden.shape[:2] == (3, 3) and hidden.shape[-1] == 32  # 3x3, 32 channels


@pytest.mark.slow
def test_deeper_private_levels_join_the_shared_features_on_their_grid():
    config = small_config()
    config.efc.flow.private_channels = 8
    config.efc.flow.private_levels = 3  # strides 2, 4 (with layer1) and 8 (with layer3)
    model = make_efc_model(config.model, config.efc)
    rng = np.random.default_rng(2)
    a = jnp.asarray(rng.uniform(size=(2, 32, 48, 3)), jnp.float32)
    b = jnp.asarray(rng.uniform(size=(2, 32, 48, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), a, b)
    private = variables["params"]["private"]
    assert [private[f"conv{i}"]["kernel"].shape[-1] for i in (1, 2, 3)] == [8, 16, 32]
    out = model.apply(variables, a, b)
    # Same levels as with one private level: stride 2, layer1 (4), layer3 (8), extras.
    assert [p.shape[1:3] for p in out["pyramid"][:3]] == [(16, 24), (8, 12), (4, 6)]
    assert out["corr_level"] == 2
    # L_cons still sees the shared feature alone (2 x width channels), not the concat.
    assert out["features"].shape[-1] == 2 * config.model.width
    # The correlation now reads the stride-8 private level: moving only its weights moves
    # the flow even where every residual prediction but the coarsest starts at zero.
    moved = jax.tree.map(lambda x: x, variables)
    moved["params"]["private"]["conv3"] = jax.tree.map(lambda x: x + 0.3,
                                                       private["conv3"])
    predictions = [n for n in variables["params"]["flow"] if n.startswith("predict_flow")]
    _assert_moves_flow_not_logits(model, variables, moved, a, b, predictions)
    # A private level on no shared grid (stride 16 here) is refused with the field's name.
    config.efc.flow.private_levels = 4
    with pytest.raises(ValueError, match="efc.flow.private_levels"):
        make_efc_model(config.model, config.efc).init(jax.random.key(0), a, b)


def test_private_level_refines_the_flow_at_stride_2_and_the_segmenter_never_reads_it():
    config = small_config()
    config.efc.flow.private_channels = 8
    model = make_efc_model(config.model, config.efc)
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.uniform(size=(2, 32, 48, 3)), jnp.float32)
    b = jnp.asarray(rng.uniform(size=(2, 32, 48, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), a, b)
    out = model.apply(variables, a, b)
    assert out["pyramid"][0].shape == (4, 16, 24, 2)  # the private level, stride 2
    assert out["pyramid"][1].shape == (4, 8, 12, 2)   # layer1, stride 4
    assert out["pyramid"][out["corr_level"]].shape[1:3] == out["features"].shape[1:3]
    # Forward and backward flows still come from the pair stacked both ways.
    ba = model.apply(variables, b, a)
    np.testing.assert_allclose(out["flow"][2:], ba["flow"][:2], atol=1e-5)
    # Moving the private weights moves the flow but not one logit (training or inference).
    moved = jax.tree.map(lambda x: x, variables)
    moved["params"]["private"] = jax.tree.map(lambda x: x + 0.3, variables["params"]["private"])
    _assert_moves_flow_not_logits(model, variables, moved, a, b, ["predict_flow0"])


def _assert_moves_flow_not_logits(model, variables, moved, a, b, predictions):
    """``moved`` (private weights changed) moves the flow but no logit, in training or
    inference. The residual predictions start at zero: the named ones get weights first."""
    for v in (variables, moved):
        for name in predictions:
            k = v["params"]["flow"][name]["kernel"]
            v["params"]["flow"][name]["kernel"] = jnp.full_like(k, 0.01)
    out, out_moved = model.apply(variables, a, b), model.apply(moved, a, b)
    np.testing.assert_array_equal(out["logits"], out_moved["logits"])
    assert float(jnp.max(jnp.abs(out["flow"] - out_moved["flow"]))) > 1e-3
    np.testing.assert_array_equal(
        model.apply(variables, a, method=type(model).segment),
        model.apply(moved, a, method=type(model).segment))


@pytest.mark.slow
@pytest.mark.parametrize("private", [(0, 1), (8, 3)])  # (channels, levels)
def test_inference_is_the_plain_segmenter_with_no_flow_cost(private):
    config = small_config()
    config.efc.flow.private_channels, config.efc.flow.private_levels = private
    task = efc.EFCTask(config)
    variables = task.init_variables(jax.random.key(0))
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 64, 128, 3)), jnp.float32)
    inf_vars = task.inference_variables(variables["params"],
                                        {k: v for k, v in variables.items() if k != "params"})
    fn = task.inference_fn()
    # Same logits as the segmenter alone with the same parameters.
    plain = StaticModel(static=make_efc_model(config.model, config.efc).static)
    np.testing.assert_allclose(fn(inf_vars, images), plain.apply(inf_vars, images), atol=1e-6)

    def flops(f, *args):
        cost = jax.jit(f).lower(*args).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return cost["flops"]

    inference = flops(fn, inf_vars, images)
    segmenter = flops(lambda v, x: plain.apply(v, x), inf_vars, images)
    joint = flops(lambda v, x: task.model.apply(v, x, x), variables, images)
    assert inference == segmenter
    assert joint > 2 * inference  # the training model does pay for flow and both frames
    leaves = jax.tree.leaves(inf_vars)
    assert sum(x.size for x in leaves) < sum(x.size for x in jax.tree.leaves(variables))


# --------------------------------------------------------------------------- eq. (9)


def _textured(h, w, seed):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    return np.stack([0.5 + 0.4 * np.sin(xx / rng.uniform(2, 4) + rng.uniform(0, 6))
                     * np.cos(yy / rng.uniform(2, 4)) for _ in range(3)], -1)


def _fake_outputs(flow_1to2, flow_2to1, feats, h, w):
    """EFCModel-shaped outputs for one pair (B = 1) with given flows, 2 pyramid levels."""
    flow = jnp.concatenate([flow_1to2, flow_2to1])
    pyramid = [ops.resize_flow(flow, h // 2, w // 2), ops.resize_flow(flow, h // 4, w // 4)]
    occ = [jnp.zeros(p.shape[:3]) for p in pyramid]
    logits = jnp.zeros((2, h, w, 3)).at[..., 0].set(5.0)
    # O_est = the true out-of-image occlusion of eq. (3), so those pixels carry no weight.
    return {"flow": flow, "pyramid": pyramid, "occlusion": occ, "occlusion_full":
            ops.out_of_image_mask(flow), "logits": logits, "features": feats, "corr_level": 1}


@pytest.mark.slow
def test_joint_terms_vanish_for_the_true_flow_both_ways():
    h, w, dx = 32, 48, 2.0
    img2 = jnp.asarray(_textured(h, w, 0))[None]
    fwd = jnp.broadcast_to(jnp.asarray([dx, 0.0]), (1, h, w, 2))
    img1 = ops.warp(img2, fwd, padding="border")  # frame 1 = frame 2 moved by the flow
    images = jnp.concatenate([img1, img2])
    feats = jax.image.resize(images, (2, h // 4, w // 4, 3), "linear")
    labels = jnp.full((2, h, w), 255)
    true = efc_losses.joint_loss_terms(_fake_outputs(fwd, -fwd, feats, h, w), images, labels,
                                       num_scales=1)
    zero = efc_losses.joint_loss_terms(_fake_outputs(0 * fwd, 0 * fwd, feats, h, w), images,
                                       labels, num_scales=1)
    # Left: SSIM windows next to the occluded border columns (O_est masks the columns).
    assert float(true["L_pm"]()) < 0.05 * float(zero["L_pm"]())
    assert float(true["L_sm"]()) == pytest.approx(0.0, abs=1e-6)  # constant flow
    assert float(true["L_seg"]()) == 0.0  # no labelled pixel: nothing to learn from
    # Features that are warped copies of each other: L_cons is 0 for the true flow.
    f2 = jnp.asarray(_textured(h // 4, w // 4, 1))[None]
    shift = jnp.broadcast_to(jnp.asarray([dx / 4, 0.0]), (1, h // 4, w // 4, 2))
    f1 = ops.warp(f2, shift, padding="border")
    f_out = _fake_outputs(fwd, -fwd, jnp.concatenate([f1, f2]), h, w)
    f_out["pyramid"][1] = jnp.concatenate([shift, -shift])
    cons = efc_losses.joint_loss_terms(f_out, images, labels)["L_cons"]()
    direct = efc_losses.consistency_loss(f1, f2, shift) + efc_losses.consistency_loss(
        f2, f1, -shift)
    assert float(cons) == pytest.approx(float(direct) / 2, rel=1e-5)  # both directions
    # Zero once the pixels whose match leaves the image are masked (eq. 2's 1 - O).
    masked = efc_losses.consistency_loss(f1, f2, shift, ops.out_of_image_mask(shift))
    assert float(masked) < 1e-10 < float(direct)


def test_cons_flow_grad_false_stops_l_cons_at_the_flow_but_not_the_features():
    h, w = 32, 48
    feats = jnp.asarray(np.stack([_textured(h // 4, w // 4, s) for s in (1, 2)]))
    shift = jnp.full((1, h // 4, w // 4, 2), 0.3)
    images = jnp.zeros((2, h, w, 3))

    def l_cons(flow, feats, cons_flow_grad):
        out = _fake_outputs(jnp.zeros((1, h, w, 2)), jnp.zeros((1, h, w, 2)), feats, h, w)
        out["pyramid"][1] = flow
        return efc_losses.joint_loss_terms(out, images, jnp.full((2, h, w), 255),
                                           cons_flow_grad=cons_flow_grad)["L_cons"]()

    flow = jnp.concatenate([shift, -shift])
    for on in (True, False):
        g_flow, g_feat = jax.grad(l_cons, argnums=(0, 1))(flow, feats, on)
        assert (float(jnp.abs(g_flow).sum()) > 0) == on
        assert float(jnp.abs(g_feat).sum()) > 0
        assert float(l_cons(flow, feats, on)) == pytest.approx(float(l_cons(flow, feats, True)))


def test_cons_on_probabilities_compares_class_probabilities_along_the_full_flow():
    h, w, dx = 32, 48, 2.0
    logits2 = jnp.asarray(_textured(h, w, 5))[None] * 8.0  # 3 "classes", varied everywhere
    fwd = jnp.broadcast_to(jnp.asarray([dx, 0.0]), (1, h, w, 2))
    logits1 = ops.warp(logits2, fwd, padding="border")  # frame 1's = frame 2's moved
    images = jnp.zeros((2, h, w, 3))
    labels = jnp.full((2, h, w), 255)

    def l_cons(flow_1to2, flow_2to1, feats, **kw):
        out = _fake_outputs(flow_1to2, flow_2to1, feats, h, w)
        out["logits"] = jnp.concatenate([logits1, logits2])
        return float(efc_losses.joint_loss_terms(out, images, labels, **kw)["L_cons"]())

    junk = jnp.asarray(np.random.default_rng(0).normal(size=(2, h // 4, w // 4, 3)))
    # Probabilities: zero along the true flow (outside O_est), whatever the features are.
    true = l_cons(fwd, -fwd, junk, cons_on="probabilities")
    wrong = l_cons(0 * fwd, 0 * fwd, junk, cons_on="probabilities")
    assert true < 1e-8 < wrong
    assert l_cons(fwd, -fwd, 2 * junk, cons_on="probabilities") == pytest.approx(true, abs=1e-9)
    # The default compares the features, which these are not consistent in.
    assert l_cons(fwd, -fwd, junk) > 1e-3
    with pytest.raises(ValueError, match="efc.cons_on"):
        l_cons(fwd, -fwd, junk, cons_on="logits")


@pytest.mark.slow
def test_occlusion_target_and_seg_occlusion_change_the_photometric_weights():
    h, w = 16, 24
    img = jnp.asarray(_textured(h, w, 3))[None]
    images = jnp.concatenate([img, img * 0.5])
    labels = jnp.full((2, h, w), 255)
    out = _fake_outputs(jnp.zeros((1, h, w, 2)), jnp.zeros((1, h, w, 2)),
                        jnp.zeros((2, 4, 6, 3)), h, w)
    base = float(efc_losses.joint_loss_terms(out, images, labels, num_scales=1)["L_pm"]())
    out["occlusion_full"] = jnp.full((2, h, w), 0.5)  # half occluded -> half the weight
    half = float(efc_losses.joint_loss_terms(out, images, labels, num_scales=1,
                                             seg_occlusion=False)["L_pm"]())
    assert half == pytest.approx(0.5 * base, rel=1e-5)
    # Segmentations that disagree everywhere: O_error = 1 - O_est = 0.5 -> weight 1.
    out["logits"] = jnp.concatenate([out["logits"][:1], out["logits"][1:, ..., ::-1]])
    seg = float(efc_losses.joint_loss_terms(out, images, labels, num_scales=1)["L_pm"]())
    assert seg == pytest.approx(base, rel=1e-5)
    # L_occ against eq. (3): a flow pushing every pixel out of the image -> target 1.
    out["flow"] = jnp.full((2, h, w, 2), 100.0)
    occ = float(efc_losses.joint_loss_terms(out, images, labels, num_scales=1)["L_occ"]())
    expected = -np.log(0.5) - efc_losses.ALPHA * np.exp(-0.5)
    assert occ == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_a_zero_weight_term_adds_no_gradient_and_is_not_computed():
    task = efc.EFCTask(small_config())
    variables = task.init_variables(jax.random.key(0))
    params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    rng = np.random.default_rng(0)
    batch = {"frames": jnp.asarray(rng.uniform(size=(1, 4, 32, 64, 3)), jnp.float32),
             "labels": jnp.asarray(rng.integers(0, 10, (1, 4, 32, 64)), jnp.int32),
             "label_pos": jnp.asarray([2]), "labelled": jnp.asarray([True])}
    grad_fn = jax.jit(jax.value_and_grad(lambda *a: task.loss_fn(*a), has_aux=True))
    task.weights = {"L_seg": 1.0}
    (_, (metrics, _)), grads = grad_fn(params, state, batch, jax.random.key(1))
    assert set(metrics) & set(efc_losses.DEFAULT_WEIGHTS) == {"L_seg"}
    flow_grad = sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(grads["flow"]))
    assert flow_grad == 0.0  # only the flow terms reach the flow decoder
    task.weights = {"L_seg": 1.0, "L_pm": 1.0}
    grad_fn = jax.jit(jax.value_and_grad(lambda *a: task.loss_fn(*a), has_aux=True))
    (_, (metrics, _)), grads = grad_fn(params, state, batch, jax.random.key(1))
    assert set(metrics) & set(efc_losses.DEFAULT_WEIGHTS) == {"L_seg", "L_pm"}
    assert sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(grads["flow"])) > 0


@pytest.mark.slow
def test_pairs_in_passes_average_the_passes_losses_and_gradients():
    """``efc.pairs_per_pass``: the step's loss and gradients are the mean of those of
    each set of pairs taken alone (dropout off, so each set's pass is deterministic);
    the running statistics are updated once per set, in order."""
    config = small_config()
    config.model.dropout = 0.0
    config.efc.pairs_per_snippet = 2
    whole = efc.EFCTask(config)
    config.efc.pairs_per_pass = 1
    split = efc.EFCTask(config)
    variables = whole.init_variables(jax.random.key(0))
    params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    rng = np.random.default_rng(0)
    batch = {"frames": jnp.asarray(rng.uniform(size=(2, 6, 32, 64, 3)), jnp.float32),
             "labels": jnp.asarray(rng.integers(0, 10, (2, 6, 32, 64)), jnp.int32),
             "label_pos": jnp.asarray([2, 3]), "labelled": jnp.asarray([True, True])}
    key = jax.random.key(1)
    grad = jax.value_and_grad(lambda p, task: task.loss_fn(p, state, batch, key),
                              has_aux=True)
    (loss, (metrics, new_state)), grads = jax.jit(grad, static_argnums=1)(params, split)
    # By hand: the same pairs, the k-th pair of each snippet in pass k.
    images, labels, _ = whole.pairs(batch, jax.random.split(key)[0])
    n = images.shape[0] // 2
    by_pass = []
    running = state
    for k in range(2):
        rows = jnp.asarray([b * 2 + k for b in range(2)])
        pick = jnp.concatenate([rows, n + rows])

        def one(p, running=running, pick=pick):
            return whole._pass(p, running, images[pick], labels[pick], key)
        (loss_k, (_, running)), grads_k = jax.value_and_grad(one, has_aux=True)(params)
        by_pass.append((loss_k, grads_k))
    np.testing.assert_allclose(loss, (by_pass[0][0] + by_pass[1][0]) / 2, rtol=1e-5)
    for ours, a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(by_pass[0][1]),
                          jax.tree.leaves(by_pass[1][1])):
        np.testing.assert_allclose(ours, (a + b) / 2, rtol=2e-4, atol=1e-6)
    for ours, want in zip(jax.tree.leaves(new_state), jax.tree.leaves(running)):
        np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="efc.pairs_per_pass: 0 .* a divisor"):
        config.efc.pairs_per_pass = 3
        efc.EFCTask(config)


# --------------------------------------------------------------------------- configs, task


VARIANTS = ["full", "tcc_fix", "tcc_single", "tcc_single_om", "tcc_multi_om",
            "ul", "ul_oe", "ul_tc", "ul_oe_tc"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_ablation_variant_is_a_valid_config(variant):
    c = load_config("efc_synthetic", variant)
    efc.validate_config(c)
    w = {k for k, v in c.efc.loss_weights.items() if v}
    if variant.startswith("ul"):
        assert ("L_seg" in w) == variant.endswith("tc") and "L_pm" in w and "L_sm" in w
        assert ("L_occ" in w) == ("oe" in variant)
    else:
        assert {"L_seg", "L_cons"} <= w
    assert (c.efc.unlabelled_data is not None) == (variant == "full")
    assert c.efc.pairs_per_snippet == (1 if variant in ("tcc_fix", "tcc_single",
                                                         "tcc_single_om") else 4)


def test_bad_efc_fields_are_named():
    c = load_config("efc_synthetic")
    c.efc.loss_weights.L_bogus = 1.0
    with pytest.raises(ValueError, match="efc.loss_weights.*L_bogus"):
        efc.validate_config(c)
    c = load_config("efc_synthetic", "ul")
    c.efc.loss_weights.L_cons = 1.0
    with pytest.raises(ValueError, match="flow_only"):
        efc.validate_config(c)
    with pytest.raises(ValueError, match="unknown variant"):
        load_config("efc_synthetic", "tcc_bogus")
    c = load_config("efc_synthetic")
    c.efc.cons_on = "logits"
    with pytest.raises(ValueError, match="efc.cons_on.*'logits'"):
        efc.validate_config(c)
    c = load_config("efc_synthetic")
    c.efc.flow.private_channels = -1
    with pytest.raises(ValueError, match="efc.flow.private_channels"):
        make_efc_model(c.model, c.efc)
    c.efc.flow.private_channels = 8
    c.efc.flow.private_levels = 0
    with pytest.raises(ValueError, match="efc.flow.private_levels must be >= 1"):
        make_efc_model(c.model, c.efc)
    c.efc.flow.private_channels = 0
    c.efc.flow.private_levels = 2
    with pytest.raises(ValueError, match="efc.flow.private_levels = 2 needs"):
        make_efc_model(c.model, c.efc)
    c = load_config("efc_synthetic", "tcc_fix")
    c.efc.flow.private_channels = 8
    with pytest.raises(ValueError, match="efc.flow.private_channels.*shared"):
        make_efc_model(c.model, c.efc)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    synthetic_tfds.build(str(data_dir), "tiny", num_workers=1)
    return str(data_dir)


def tiny_config(data_dir, variant="full"):
    c = load_config("efc_synthetic", variant)
    c.data.data_dir = data_dir
    c.data.config = "tiny"  # 48x64, 5 frames, labelled frame 3
    if c.efc.unlabelled_data is not None:
        c.efc.unlabelled_data = ml_collections.ConfigDict(c.data.to_dict())
        c.efc.unlabelled_batch_size = 8  # batches split over the 8 test devices
    c.input.batch_size = 8
    c.input.augment.resize = (48, 64)
    c.input.augment.crop_size = (48, 64)
    c.model.width = 8
    c.efc.pairs_per_snippet = 1
    c.efc.flow.joint_channels = 16
    c.efc.flow.extra_channels = (16,)
    c.train.num_steps, c.train.log_every, c.train.eval_every = 4, 2, 0
    if "flow_pretrain" in c.stages:
        c.stages.flow_pretrain.train.num_steps = 3
    c.eval.num_snippets = 3
    c.eval.num_panels = 2
    return c


@pytest.mark.slow
def test_efc_run_writes_the_metrics_json_and_panels(tiny_data, tmp_path):
    from vsegjax.core import checkpoint
    c = tiny_config(tiny_data)
    c.stages.static_continued.enabled = True
    c.stages.efc.init_from = "static"
    results = experiments.run(c, str(tmp_path))
    # EFC began at the static stage's weights (4 Adam steps at 3e-4 move one by < 1.2e-3)
    # and the baseline is that segmenter trained alone for as many more steps.
    static = checkpoint.load_state_tree(str(tmp_path / "static"))["params"]["static"]
    joint = checkpoint.load_state_tree(str(tmp_path / "efc"))["params"]["static"]
    for a, b in zip(jax.tree.leaves(static), jax.tree.leaves(joint)):
        assert np.max(np.abs(a - b)) < 2e-3
    cont = checkpoint.load_state_tree(str(tmp_path / "static_continued"))
    assert int(cont["step"]) == c.train.num_steps
    saved = json.loads((tmp_path / "eval_metrics.json").read_text())
    assert set(saved["efc"]) == {"miou", "epe_all", "epe_noc", "fl_all"}
    assert set(saved["flow_baselines"]) == {"zero", "farneback"}
    assert set(saved["flow_baselines"]["zero"]) == {"epe_all", "epe_noc", "fl_all"}
    assert 0 <= saved["static"]["miou"] <= 1 and results["efc"]["miou"] == saved["efc"]["miou"]
    # The zero flow's EPE is the mean true flow magnitude: check against the data.
    assert saved["flow_baselines"]["zero"]["epe_all"] > 0
    assert sorted(p.name for p in (tmp_path / "panels").glob("*.png")) == [
        "example_000.png", "example_001.png"]
    lines = [json.loads(x) for x in (tmp_path / "efc" / "metrics.jsonl").read_text().split("\n")
             if x.strip()]
    logged = set().union(*lines)
    assert set(efc_losses.DEFAULT_WEIGHTS) <= logged  # every term logged on its own
    # The run's flow branch, as the real-data evaluation loads it from the folder.
    from vsegjax.methods.efc import flow_real
    flow = flow_real.learned_fn(str(tmp_path))(np.zeros((48, 64, 3), np.uint8),
                                               np.zeros((48, 64, 3), np.uint8))
    assert flow.shape == (48, 64, 2) and np.isfinite(flow).all()


@pytest.mark.slow
def test_tcc_fix_pretrains_a_flownet_and_keeps_it_fixed(tiny_data, tmp_path):
    from vsegjax.core import checkpoint
    experiments.run(tiny_config(tiny_data, "tcc_fix"), str(tmp_path))
    pre = checkpoint.load_state_tree(str(tmp_path / "flow_pretrain"))
    joint = checkpoint.load_state_tree(str(tmp_path / "efc"))
    assert set(pre["params"]) == {"flow"}  # flow-only: no segmenter was trained or stored
    for a, b in zip(jax.tree.leaves(pre["params"]["flow"]),
                    jax.tree.leaves(joint["params"]["flow"])):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_flow_only_mode_trains_the_flow_branch(tiny_data, tmp_path):
    results = experiments.run(tiny_config(tiny_data, "ul"), str(tmp_path))
    assert "miou" not in results["efc"] and "static" not in results
    assert np.isfinite(results["efc"]["epe_all"])


@pytest.mark.parametrize("variant", ["full", "tcc_fix", "ul"])
def test_cityscapes_config_has_the_papers_setup(variant):
    c = load_config("efc_cityscapes", variant)
    efc.validate_config(c)
    assert (c.model.backbone, c.model.head, c.model.output_stride) == ("resnet50", "psp", 8)
    assert (c.optimizer.name, c.optimizer.momentum, c.optimizer.weight_decay) == ("sgd", 0.9, 1e-4)
    assert (c.optimizer.schedule, c.optimizer.learning_rate, c.optimizer.power) == ("poly", 0.01, 0.9)
    assert tuple(c.input.augment.crop_size) == (713, 713) and c.input.batch_size == 16
    assert c.train.num_steps == 120_000 and tuple(c.efc.dt_range) == (1, 5)
    assert c.efc.loss_weights.to_dict() == load_config("efc_synthetic", variant).efc.loss_weights.to_dict()

