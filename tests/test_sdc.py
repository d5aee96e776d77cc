"""SDC-Net video reconstruction: the SDC sampling step, the model, its losses, the task."""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vsegjax.data import synthetic_tfds
from vsegjax.methods.vplr import sdc_losses
from vsegjax.methods.vplr.sdc_model import SDCFlow, SDCNet, make_sdc_model
from vsegjax.methods.vplr.sdc import load_sdc_flow
from vsegjax.ops import pixel_grid, sample, warp
from vsegjax.ops.sdc import delta_kernel, kernel_offsets, sdc_sample, sdc_sample_labels
from vsegjax import experiments
from vsegjax.methods.vplr import sdc
ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config(variant="reconstruction"):
    spec = importlib.util.spec_from_file_location("sdc_synthetic",
                                                  ROOT / "configs" / "sdc_synthetic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def _image(shape=(1, 16, 24, 3), seed=0):
    # numpy, not jax.random: each new jax.random shape costs a compilation on CPU.
    return jnp.asarray(np.random.default_rng(seed).uniform(size=shape), jnp.float32)


def sdc_reference(image, motion, kernel, padding):
    """The definition: one bilinear ``sample`` per tap, weighted by the kernel."""
    k = int(round(kernel.shape[-1] ** 0.5))
    base = pixel_grid(*image.shape[1:3]) + motion
    return sum(kernel[..., t:t + 1] * sample(image, base + jnp.asarray([dx, dy], jnp.float32),
                                             padding=padding)
               for t, (dy, dx) in enumerate(kernel_offsets(k)))


# --------------------------------------------------------------------------- the SDC step


def test_zero_motion_and_centred_delta_kernel_is_the_identity():
    image = _image((2, 16, 24, 3))
    motion = jnp.zeros((2, 16, 24, 2))
    for k in (1, 3):
        out = jax.jit(sdc_sample)(image, motion, delta_kernel((2, 16, 24), k))
        np.testing.assert_allclose(out, image, atol=1e-6)
    labels = jnp.asarray(np.random.default_rng(1).integers(0, 10, (2, 16, 24)), jnp.int32)
    np.testing.assert_array_equal(jax.jit(sdc_sample_labels)(labels, motion), labels)


def test_integer_motion_with_a_delta_kernel_is_a_warp_and_a_known_shift():
    image = _image()
    motion = jnp.broadcast_to(jnp.asarray([2.0, -1.0]), (1, 16, 24, 2))  # x +2, y -1
    labels = jnp.arange(16 * 24, dtype=jnp.int32).reshape(1, 16, 24) % 200

    @jax.jit
    def run(image, motion, labels):
        kernel = delta_kernel((1, 16, 24))
        return (sdc_sample(image, motion, kernel, padding="zeros"), warp(image, motion),
                sdc_sample_labels(labels, motion))

    out, warped, lab = run(image, motion, labels)
    np.testing.assert_allclose(out, warped, atol=1e-6)
    # out[i, j] = image[i - 1, j + 2] where that exists.
    np.testing.assert_allclose(out[0, 1:, :-2], image[0, :-1, 2:], atol=1e-6)
    # Labels follow the same motion and are 255 where the source left the image.
    np.testing.assert_array_equal(lab[0, 1:, :-2], labels[0, :-1, 2:])
    assert (lab[0, 0] == 255).all() and (lab[0, :, -2:] == 255).all()


def test_uniform_kernel_is_a_box_filter_of_the_warped_image():
    image = _image()
    motion = jnp.broadcast_to(jnp.asarray([0.5, 1.25]), (1, 16, 24, 2))  # sub-pixel
    out = sdc_sample(image, motion, jnp.full((1, 16, 24, 9), 1.0 / 9.0))
    warped = np.asarray(warp(image, motion))
    box = sum(warped[:, 1 + dy:warped.shape[1] - 1 + dy, 1 + dx:warped.shape[2] - 1 + dx]
              for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9.0
    # Away from the borders (3 rows lost to the 1.25 px + 1 tap downwards shift).
    np.testing.assert_allclose(np.asarray(out)[:, 1:-3, 1:-2], box[:, :-2, :-1], atol=1e-5)


@pytest.mark.parametrize("padding", ["border", "zeros"])
def test_fused_gather_equals_one_bilinear_sample_per_tap(padding):
    rng = np.random.default_rng(1)
    image = _image((2, 16, 24, 3))
    motion = jnp.asarray(rng.normal(0, 4, (2, 16, 24, 2)), jnp.float32)  # some leave the image
    kernel = jax.nn.softmax(jnp.asarray(rng.normal(0, 1, (2, 16, 24, 25)), jnp.float32))
    np.testing.assert_allclose(sdc_sample(image, motion, kernel, padding=padding),
                               sdc_reference(image, motion, kernel, padding), atol=1e-5)


def test_motion_gradient_of_a_delta_kernel_is_the_warp_gradient():
    image = _image()
    motion = jnp.asarray(np.random.default_rng(2).normal(0, 2, (1, 16, 24, 2)), jnp.float32)
    target = _image(seed=5)

    def loss(fn):
        return lambda m: jnp.sum(jnp.square(fn(m) - target))

    g_sdc = jax.jit(jax.grad(loss(lambda m: sdc_sample(image, m, delta_kernel((1, 16, 24)),
                                                       padding="zeros"))))(motion)
    g_warp = jax.jit(jax.grad(loss(lambda m: warp(image, m))))(motion)
    np.testing.assert_allclose(g_sdc, g_warp, atol=1e-4)


def test_bad_shapes_name_the_argument():
    image, motion = _image(), jnp.zeros((1, 16, 24, 2))
    with pytest.raises(ValueError, match="K\\*K"):
        sdc_sample(image, motion, jnp.ones((1, 16, 24, 4)))
    with pytest.raises(ValueError, match="kernel"):
        sdc_sample(image, motion, jnp.ones((1, 8, 24, 9)))
    with pytest.raises(ValueError, match="motion"):
        sdc_sample(image, jnp.zeros((1, 16, 24, 3)), delta_kernel((1, 16, 24)))
    with pytest.raises(ValueError, match="labels"):
        sdc_sample_labels(jnp.zeros((1, 16, 24), jnp.float32), motion)


# --------------------------------------------------------------------------- losses


def test_gradient_loss_ignores_constant_offsets_and_l1_does_not():
    a = _image()
    assert float(sdc_losses.gradient_loss(a, a)) == 0.0
    assert float(sdc_losses.gradient_loss(a + 0.3, a)) < 1e-6
    assert float(sdc_losses.l1_loss(a + 0.3, a)) == pytest.approx(0.3, abs=1e-6)
    assert float(sdc_losses.gradient_loss(a[:, ::-1], a)) > 0.1
    with pytest.raises(ValueError, match="shape"):
        sdc_losses.l1_loss(a, a[..., :2])


# --------------------------------------------------------------------------- the model


def _translated_pair(shift=(1.0, 2.0), shape=(2, 16, 24)):
    """Frames (t-1, t) and t+1 of a smooth texture moving by ``shift`` (x, y) px per frame.

    Analytic (sums of sinusoids), so the motion is exact everywhere, borders included.
    """
    b, h, w = shape
    rng = np.random.default_rng(3)
    freq = rng.uniform(-0.6, 0.6, (b, 3, 3, 2))  # [B, channel, wave, (fx, fy)]
    phase = rng.uniform(0, 2 * np.pi, (b, 3, 3))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)

    def frame(k):
        x, y = xs - k * shift[0], ys - k * shift[1]
        waves = np.sin(freq[..., 0, None, None] * x + freq[..., 1, None, None] * y
                       + phase[..., None, None])  # [B, 3, 3, H, W]
        return np.moveaxis(0.5 + 0.15 * waves.sum(2), 1, -1).astype(np.float32)

    return jnp.asarray(np.stack([frame(0), frame(1)], axis=1)), jnp.asarray(frame(2))


@pytest.fixture(scope="module")
def recon():
    """A small reconstruction model, a translated pair and fresh variables (one jitted init:
    initialisers compile slowly on CPU, so the model tests share it)."""
    frames, target = _translated_pair()
    model = SDCNet(mode="reconstruction", width=8, depth=1, max_motion=4.0)
    return model, frames, target, jax.jit(model.init)(jax.random.key(0), frames, target)


def test_fresh_model_starts_near_copying_the_last_frame(recon):
    model, frames, target, variables = recon
    out = jax.jit(model.apply)(variables, frames, target)
    assert out["motion"].shape == (2, 16, 24, 2) and out["kernel"].shape == (2, 16, 24, 9)
    np.testing.assert_allclose(out["kernel"].sum(-1), 1.0, atol=1e-5)
    assert float(jnp.abs(out["motion"]).max()) == 0.0
    assert float(out["kernel"][..., 4].min()) > 0.9  # near the centred delta
    copy_l1 = float(sdc_losses.l1_loss(frames[:, -1], target))
    assert float(sdc_losses.l1_loss(out["image"], target)) < 1.1 * copy_l1


def test_reconstruction_overfits_a_translated_pair_and_needs_the_target(recon):
    model, frames, target, params = recon
    with pytest.raises(ValueError, match="target"):
        model.apply(params, frames)
    with pytest.raises(ValueError, match="num_inputs"):
        model.apply(params, frames[:, :1], target)
    tx = optax.adam(3e-3)

    def loss(p):
        return sdc_losses.l1_loss(model.apply(p, frames, target)["image"], target)

    @jax.jit
    def steps(p):
        def body(carry, _):
            p, s = carry
            value, g = jax.value_and_grad(loss)(p)
            updates, s = tx.update(g, s, p)
            return (optax.apply_updates(p, updates), s), value
        (p, _), values = jax.lax.scan(body, (p, tx.init(p)), None, length=50)
        return p, values, loss(p)

    _, values, final = steps(params)
    copy_l1 = float(sdc_losses.l1_loss(frames[:, -1], target))
    assert float(values[0]) == pytest.approx(copy_l1, rel=0.1)
    assert float(final) < 0.4 * copy_l1
    # Prediction mode needs no target (shapes only: no second initialisation).
    pred = SDCNet(mode="prediction", width=8, depth=1)
    variables = jax.eval_shape(pred.init, jax.random.key(0), frames)
    out = jax.eval_shape(pred.apply, variables, frames)
    assert out["image"].shape == target.shape


def test_config_variants_build_models():
    for variant in ("reconstruction", "prediction"):
        c = load_config(variant)
        assert make_sdc_model(c.sdc).mode == variant
    c = load_config()
    c.sdc.mode = "bogus"
    with pytest.raises(ValueError, match="sdc.mode"):
        make_sdc_model(c.sdc)
    c = load_config()
    c.sdc.loss_weights = {"L_bogus": 1.0}
    with pytest.raises(ValueError, match="sdc.loss_weights"):
        sdc.validate_config(c)


def test_windows_are_drawn_inside_the_snippets():
    frames = jnp.arange(3 * 5, dtype=jnp.float32).reshape(3, 5, 1, 1, 1)
    starts = sdc.window_starts(jax.random.key(0), 3, 5, 2, 16)
    assert int(starts.min()) >= 0 and int(starts.max()) <= 2
    w = sdc.gather_windows(frames, starts, 3)
    assert w.shape == (48, 3, 1, 1, 1)
    np.testing.assert_array_equal(np.diff(np.asarray(w)[:, :, 0, 0, 0], axis=1), 1.0)
    with pytest.raises(ValueError, match="too short"):
        sdc.window_starts(jax.random.key(0), 3, 2, 2, 1)


def test_sdc_flow_pairs_each_target_with_its_past_in_both_directions():
    class Stub:  # motion = (target - last input, first input), to read the windows back
        num_inputs = 2

        def apply(self, variables, frames, target):
            x = target[..., :1] - frames[:, -1, ..., :1]
            return {"motion": jnp.concatenate([x, frames[:, 0, ..., :1]], axis=-1)}

    frames = np.broadcast_to(np.arange(4, dtype=np.float32)[None, :, None, None, None],
                             (1, 4, 2, 3, 3))  # frame k is the constant k
    fwd, bwd = SDCFlow(Stub(), None).flows(frames)
    # bwd[k]: target k+1 from (k-1, k), frame -1 repeating frame 0.
    np.testing.assert_array_equal(bwd[0, :, 0, 0], [[1, 0], [1, 0], [1, 1]])
    # fwd[k]: target k from (k+2, k+1) of the reversed video, frame 4 repeating frame 3.
    np.testing.assert_array_equal(fwd[0, :, 0, 0], [[-1, 2], [-1, 3], [-1, 3]])


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    synthetic_tfds.build(str(data_dir), "tiny", num_workers=1)
    return str(data_dir)


@pytest.mark.slow
def test_sdc_run_writes_metrics_and_a_panel(tiny_data, tmp_path):
    c = load_config()
    c.data.data_dir = tiny_data
    c.data.config = "tiny"  # 48x64, 5 frames
    c.input.batch_size = 8  # split over the 8 test devices
    c.input.augment.resize = c.input.augment.crop_size = (48, 64)
    c.sdc.width, c.sdc.depth = 8, 1
    c.train.num_steps, c.train.log_every, c.train.eval_every = 3, 1, 0
    c.eval.num_snippets, c.eval.num_panels = 3, 1
    results = experiments.run(c, str(tmp_path))
    saved = json.loads((tmp_path / "eval_metrics.json").read_text())
    assert saved["sdc"] == results["sdc"] and set(saved["copy"]) == {"psnr", "l1"}
    values = [saved[m][k] for m in ("sdc", "copy") for k in ("psnr", "l1")]
    assert all(np.isfinite(values))
    assert saved["num_windows"] == 3 * (5 - 2)
    assert (tmp_path / "panels" / "sdc_000.png").is_file()
    logged = set().union(*[json.loads(x) for x in
                           (tmp_path / "sdc" / "metrics.jsonl").read_text().splitlines()
                           if x.strip()])
    assert {"L_rec", "L_grad", "copy_l1"} <= logged
    # The trained model as a flow source for propagation: flows of both directions.
    provider = load_sdc_flow(str(tmp_path))
    frames = np.random.default_rng(0).uniform(size=(1, 3, 48, 64, 3)).astype(np.float32)
    fwd, bwd = provider.flows(frames)
    assert fwd.shape == bwd.shape == (1, 2, 48, 64, 2) and np.isfinite(fwd).all()
    assert provider.flows(frames, need="bwd")[0] is None
