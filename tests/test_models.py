"""Static segmenters: parameter counts, strides, shapes, pooling, training behaviour, configs."""

import time

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vsegjax.models import (DeepLabV3PlusHead, PSPHead, ResNet, ResNetEncoder, ResNetLayer4,
                            Segmenter, SmallSegNet, adaptive_avg_pool,
                            default_config, make_segmenter)
from vsegjax.models.heads import adaptive_pool_matrix
from vsegjax.models.resnet import stage_plan


def rng(seed: int) -> jax.Array:
    """RBG keys: on CPU, jit-compiling a threefry init costs ~0.4 s per parameter tensor."""
    return jax.random.key(seed, impl="rbg")


def n_params(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def abstract_init(model, shape):
    """Variables as ShapeDtypeStructs: no memory, no compile."""
    return jax.eval_shape(lambda x: model.init(rng(0), x, train=False),
                          jax.ShapeDtypeStruct(shape, jnp.float32))


def model_config(**kw):
    cfg = default_config()
    cfg.update(kw)
    return cfg


# torchvision resnet{18,34,50,101} parameter counts minus fc (512|2048 x 1000 + 1000).
@pytest.mark.parametrize("depth,expected", [(18, 11_689_512 - 513_000),
                                            (34, 21_797_672 - 513_000),
                                            (50, 25_557_032 - 2_049_000),
                                            (101, 44_549_160 - 2_049_000)])
def test_resnet_param_counts_match_torchvision(depth, expected):
    variables = abstract_init(ResNet(depth), (1, 224, 224, 3))
    assert n_params(variables["params"]) == expected
    assert set(variables["params"]) == {"encoder", "layer4"}
    assert set(variables["params"]["encoder"]) == {"stem", "layer1", "layer2", "layer3"}
    # BN running statistics live in batch_stats, not params (as buffers in torchvision).
    assert "batch_stats" in variables


@pytest.mark.parametrize("output_stride,size", [(32, 7), (16, 14), (8, 28)])
def test_resnet_output_stride(output_stride, size):
    model = ResNet(50, output_stride)
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    variables = abstract_init(model, x.shape)
    feats = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
    assert feats["layer4"].shape == (1, size, size, 2048)
    assert feats["stem"].shape[1:3] == feats["layer1"].shape[1:3] == (56, 56)
    assert feats["layer2"].shape[1:3] == (28, 28)
    assert feats["layer3"].shape[1:3] == (max(size, 14),) * 2
    # parameters do not depend on the output stride (dilation replaces striding)
    assert n_params(variables["params"]) == 25_557_032 - 2_049_000


def test_stage_plan_dilations():
    assert stage_plan(32) == {"layer1": (1, 1, 1), "layer2": (2, 1, 1), "layer3": (2, 1, 1),
                              "layer4": (2, 1, 1)}
    assert stage_plan(16)["layer4"] == (1, 1, 2)
    assert stage_plan(8)["layer3"] == (1, 1, 2) and stage_plan(8)["layer4"] == (1, 2, 4)


def test_resnet_is_encoder_then_layer4():
    """The two pieces applied separately with ResNet's subtrees give ResNet's output."""
    x = jax.random.uniform(rng(1), (1, 32, 32, 3))

    @jax.jit
    def run(x):
        feats, variables = ResNet(18, output_stride=16).init_with_output(rng(0), x)
        sub = lambda name: {k: v[name] for k, v in variables.items()}  # noqa: E731
        enc = ResNetEncoder(18, 16).apply(sub("encoder"), x)
        return feats, enc, ResNetLayer4(18, 16).apply(sub("layer4"), enc["layer3"])

    feats, enc, l4 = run(x)
    np.testing.assert_allclose(enc["layer3"], feats["layer3"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(l4, feats["layer4"], rtol=1e-5, atol=1e-5)
    assert l4.shape == (1, 2, 2, 512)


HEADS = ("psp", "deeplabv3plus", "simple")
COMBOS = ([(b, h, 8) for b in ("resnet18", "resnet34", "resnet50", "resnet101", "small")
           for h in HEADS]
          + [(b, h, os) for b in ("resnet18", "resnet50") for h in HEADS for os in (16, 32)])


@pytest.mark.slow
@pytest.mark.parametrize("backbone,head,output_stride", COMBOS)
def test_every_combination_gives_logits_at_input_resolution(backbone, head, output_stride):
    model = make_segmenter(model_config(backbone=backbone, head=head, num_classes=7,
                                        output_stride=output_stride, head_channels=32))
    shape = (2, 65, 97, 3)  # odd sizes: strides do not divide them
    variables = abstract_init(model, shape)
    logits, updates = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"],
                                 rngs={"dropout": rng(0)}),
        variables, jax.ShapeDtypeStruct(shape, jnp.float32))
    assert logits.shape == (2, 65, 97, 7) and logits.dtype == jnp.float32
    assert set(variables["params"]) == {"backbone", "head"}
    assert jax.tree_util.tree_structure(updates["batch_stats"]) == \
        jax.tree_util.tree_structure(variables["batch_stats"])


def test_resnet18_deeplab_real_forward_is_finite():
    model = make_segmenter(model_config(backbone="resnet18", head="deeplabv3plus", num_classes=3,
                                        output_stride=8, head_channels=32))
    x = jax.random.uniform(rng(0), (1, 64, 64, 3))
    logits, _ = jax.jit(lambda x: model.init_with_output(rng(0), x))(x)
    assert logits.shape == (1, 64, 64, 3) and bool(jnp.all(jnp.isfinite(logits)))


def test_bfloat16_compute_float32_params():
    model = make_segmenter(model_config(backbone="resnet18", head="psp", num_classes=4,
                                        dtype="bfloat16", head_channels=32))
    variables = abstract_init(model, (1, 64, 64, 3))
    assert {x.dtype for x in jax.tree_util.tree_leaves(variables)} == {jnp.dtype(jnp.float32)}
    logits, feats = jax.eval_shape(
        lambda v, x: model.apply(v, x, return_features=True), variables,
        jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    assert logits.dtype == jnp.float32 and feats["layer4"].dtype == jnp.bfloat16


def test_remat_keeps_the_parameters_results_gradients_and_statistics():
    """``model.remat`` recomputes each ResNet block in the backward pass: the same
    variables (names and values), logits, gradients and updated batch statistics."""
    images = jax.random.uniform(jax.random.PRNGKey(1), (2, 32, 32, 3))
    models = [make_segmenter(dict(backbone="resnet18", head="psp", num_classes=5,
                                  output_stride=16, remat=remat)) for remat in (False, True)]
    variables = models[0].init(jax.random.PRNGKey(0), images, train=False)
    assert jax.tree.structure(variables) == jax.tree.structure(
        models[1].init(jax.random.PRNGKey(0), images, train=False))

    def loss(params, model):
        logits, updates = model.apply({**variables, "params": params}, images, train=True,
                                      mutable=["batch_stats"],
                                      rngs={"dropout": jax.random.PRNGKey(2)})
        return jnp.sum(logits ** 2), (logits, updates)

    (plain, (logits, stats)), grads = jax.value_and_grad(loss, has_aux=True)(
        variables["params"], models[0])
    (again, (logits_r, stats_r)), grads_r = jax.value_and_grad(loss, has_aux=True)(
        variables["params"], models[1])
    np.testing.assert_allclose(logits_r, logits, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves((grads_r, stats_r)), jax.tree.leaves((grads, stats))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    text = jax.jit(jax.grad(lambda p: loss(p, models[1])[0])).lower(
        variables["params"]).as_text()
    assert "remat" in text or "checkpoint" in text or "optimization_barrier" in text


def test_adaptive_avg_pool_non_divisible_by_hand():
    # 5 -> 3 bins: [0, 2), [1, 4), [3, 5) (floor(i*5/3) .. ceil((i+1)*5/3))
    np.testing.assert_allclose(adaptive_pool_matrix(5, 3),
                               [[1 / 2, 1 / 2, 0, 0, 0],
                                [0, 1 / 3, 1 / 3, 1 / 3, 0],
                                [0, 0, 0, 1 / 2, 1 / 2]], rtol=1e-6)
    x = jnp.arange(5 * 4, dtype=jnp.float32).reshape(1, 5, 4, 1)  # x[i, j] = 4 i + j
    out = adaptive_avg_pool(x, (3, 2))
    rows = [(0, 2), (1, 4), (3, 5)]
    cols = [(0, 2), (2, 4)]
    expected = [[np.mean(np.asarray(x)[0, r0:r1, c0:c1, 0]) for c0, c1 in cols]
                for r0, r1 in rows]
    np.testing.assert_allclose(out[0, :, :, 0], expected, rtol=1e-6)
    assert float(out[0, 0, 0, 0]) == pytest.approx((0 + 1 + 4 + 5) / 4)
    # divisible case = plain average pooling; 1 bin = global mean
    y = jax.random.normal(rng(0), (2, 6, 6, 3))
    np.testing.assert_allclose(adaptive_avg_pool(y, 3),
                               flax.linen.avg_pool(y, (2, 2), strides=(2, 2)), atol=1e-6)
    np.testing.assert_allclose(adaptive_avg_pool(y, 1)[:, 0, 0], y.mean(axis=(1, 2)),
                               atol=1e-6)


def test_deeplab_rates_scale_with_output_stride():
    assert DeepLabV3PlusHead(3, output_stride=16).scaled_rates == (6, 12, 18)
    assert DeepLabV3PlusHead(3, output_stride=8).scaled_rates == (12, 24, 36)
    assert DeepLabV3PlusHead(3, output_stride=32).scaled_rates == (3, 6, 9)


def test_small_segnet_forward_and_size():
    model = SmallSegNet(num_classes=5)
    x = jax.random.uniform(rng(0), (2, 64, 128, 3))
    logits, variables = jax.jit(
        lambda x: model.init_with_output(rng(0), x, train=False))(x)
    assert n_params(variables["params"]) < 200_000
    assert logits.shape == (2, 64, 128, 5) and bool(jnp.all(jnp.isfinite(logits)))
    # same tree as the generic composition, and make_segmenter("small", "simple") builds it
    assert isinstance(make_segmenter(model_config(num_classes=5)), SmallSegNet)
    assert set(variables["params"]) == {"backbone", "head"}


def _train_step(model, tx):
    @jax.jit
    def step(params, batch_stats, opt_state, images, labels):
        def loss_fn(p):
            logits, upd = model.apply({"params": p, "batch_stats": batch_stats}, images,
                                      train=True, mutable=["batch_stats"])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, upd["batch_stats"]
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss
    return step


def test_small_segnet_train_step_is_fast_on_cpu():
    model, tx = SmallSegNet(num_classes=5), optax.adam(1e-3)
    x = jax.random.uniform(rng(0), (2, 64, 128, 3))
    y = jax.random.randint(rng(1), (2, 64, 128), 0, 5)
    variables = jax.jit(lambda x: model.init(rng(0), x))(x)
    state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))
    step = _train_step(model, tx)
    jax.block_until_ready(step(*state, x, y))  # compile
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        out = step(*state, x, y)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
        state = out[:3]
    assert np.median(times) < 0.5, times


def _block_image(rng: np.random.Generator, size=64, block=16):
    """Blocks of random colours; a block is red (label 1) or not red (label 0)."""
    n = size // block
    red = rng.permutation(np.arange(n * n) % 2).reshape(n, n).astype(bool)
    colours = rng.uniform(0, 1, (n, n, 3))
    colours[..., 0] = np.where(red, rng.uniform(0.7, 1.0, (n, n)),
                               colours[..., 0])
    colours[..., 1:] = np.where(red[..., None], rng.uniform(0.0, 0.3, (n, n, 2)),
                                colours[..., 1:])
    # non-red blocks: make sure they are not red (green or blue above 0.5)
    colours[~red, 1 + rng.integers(0, 2, (~red).sum())] = rng.uniform(0.5, 1.0, (~red).sum())
    image = np.kron(colours, np.ones((block, block, 1)))
    label = np.kron(red.astype(np.int32), np.ones((block, block), np.int32))
    return image[None].astype(np.float32), label[None]


def test_small_segnet_overfits_colour_rule():
    image, label = _block_image(np.random.default_rng(0))
    model, tx = SmallSegNet(num_classes=2, width=16), optax.adam(1e-2)
    variables = jax.jit(lambda x: model.init(rng(0), x))(image)
    state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))
    step = _train_step(model, tx)
    losses = []
    for _ in range(100):
        *state, loss = step(*state, image, label)
        losses.append(float(loss))
    params, batch_stats, _ = state
    logits = jax.jit(model.apply)({"params": params, "batch_stats": batch_stats}, image)
    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == label))
    assert losses[-1] < 0.5 * losses[0]
    assert accuracy > 0.95, (accuracy, losses[::10])


def _recover_batch_stats(old, new, momentum=0.9):
    """flax BN: new = m * old + (1 - m) * batch -> the statistics the batch was normalised by."""
    return jax.tree_util.tree_map(lambda o, n: (n - momentum * o) / (1 - momentum), old, new)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["psp", "deeplabv3plus"])
def test_train_and_eval_differ_only_by_batch_statistics(head):
    # no dropout, so that BN is the only difference between the modes
    model = make_segmenter(model_config(backbone="small", head=head, num_classes=3, width=8,
                                        dropout=0.0))
    x = jax.random.uniform(rng(0), (2, 32, 48, 3))

    @jax.jit
    def run(x):
        variables = model.init(rng(1), x)
        # perturb the running statistics so they are not the init values (0 mean, 1 var)
        leaves, treedef = jax.tree_util.tree_flatten(variables["batch_stats"])
        keys = jax.random.split(rng(2), len(leaves))
        leaves = [v + 0.1 * jnp.abs(jax.random.normal(k, v.shape)) for v, k in zip(leaves, keys)]
        variables = {**variables, "batch_stats": jax.tree_util.tree_unflatten(treedef, leaves)}
        eval_out = model.apply(variables, x, train=False, mutable=["batch_stats"])
        single = model.apply(variables, x[:1])
        train_logits, train_upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
        # eval mode with the batch's own statistics reproduces train mode
        batch_stats = _recover_batch_stats(variables["batch_stats"], train_upd["batch_stats"])
        replay = model.apply({**variables, "batch_stats": batch_stats}, x, train=False)
        return variables, eval_out, single, (train_logits, train_upd), replay

    variables, (eval_logits, eval_upd), single, (train_logits, train_upd), replay = run(x)
    same = lambda a, b: bool(jnp.all(a == b))  # noqa: E731
    # eval mode: statistics untouched, each image independent of the rest of the batch
    assert all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        same, eval_upd["batch_stats"], variables["batch_stats"])))
    np.testing.assert_allclose(single, eval_logits[:1], atol=1e-4)
    # train mode: every running statistic moves, and the output differs from eval mode
    assert not any(jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        same, train_upd["batch_stats"], variables["batch_stats"])))
    assert not np.allclose(train_logits, eval_logits, atol=1e-3)
    scale = float(jnp.max(jnp.abs(train_logits)))
    np.testing.assert_allclose(replay, train_logits, atol=2e-3 * max(scale, 1.0))


def test_dropout_only_in_train_mode():
    model = make_segmenter(model_config(backbone="small", head="psp", num_classes=3, width=8,
                                        dropout=0.5))
    x = jax.random.uniform(rng(0), (1, 32, 32, 3))
    variables = jax.jit(lambda x: model.init(rng(1), x))(x)
    run = jax.jit(lambda k: model.apply(variables, x, train=True, mutable=["batch_stats"],
                                        rngs={"dropout": rng(k)})[0])
    assert not np.allclose(run(0), run(1))
    np.testing.assert_allclose(run(3), run(3))
    evaluate = jax.jit(lambda k: model.apply(variables, x, rngs={"dropout": rng(k)}))
    np.testing.assert_array_equal(evaluate(0), evaluate(1))
    with pytest.raises(Exception, match="dropout"):  # train mode needs a 'dropout' rng
        jax.eval_shape(lambda: model.apply(variables, x, train=True, mutable=["batch_stats"]))


@pytest.mark.parametrize("field,value,match", [
    ("backbone", "resnet19", r"model\.backbone: unknown 'resnet19'; choose from"),
    ("head", "fcn", r"model\.head: unknown 'fcn'"),
    ("output_stride", 4, r"model\.output_stride: unknown 4"),
    ("num_classes", 0, r"model\.num_classes: must be a positive integer"),
    ("dtype", "float16", r"model\.dtype: unknown 'float16'"),
    ("width", -1, r"model\.width"),
    ("head_channels", 0, r"model\.head_channels"),
    ("dropout", 1.5, r"model\.dropout"),
])
def test_bad_config_values_name_the_field(field, value, match):
    cfg = model_config(backbone="resnet18", head="psp", num_classes=3)
    cfg[field] = value
    with pytest.raises(ValueError, match=match):
        make_segmenter(cfg)


def test_config_errors_small_stride_and_missing_fields():
    with pytest.raises(ValueError, match=r"model\.output_stride: the 'small' backbone"):
        make_segmenter(model_config(backbone="small", output_stride=16))
    with pytest.raises(ValueError, match=r"segmenter\.num_classes: missing"):
        make_segmenter({"backbone": "small", "head": "simple"}, name="segmenter")
    # a plain dict and a ConfigDict with only the required fields both work
    model = make_segmenter(ml_collections.ConfigDict(
        {"backbone": "resnet50", "head": "deeplabv3plus", "num_classes": 2}))
    assert isinstance(model, Segmenter) and model.backbone.output_stride == 8
    model = make_segmenter({"backbone": "small", "head": "psp", "num_classes": 2})
    assert isinstance(model.head, PSPHead) and model.head.channels == 64  # 2 x width
