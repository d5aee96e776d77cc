"""Properties of the warping, occlusion, SSIM, gradient, correlation and flow ops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import ndimage

from vsegjax import ops

jax.config.update("jax_enable_x64", False)


def _rand(shape, seed=0, lo=0.0, hi=1.0):
    return jnp.asarray(np.random.default_rng(seed).uniform(lo, hi, shape), jnp.float32)


# ----------------------------------------------------------------------------- warp
def test_zero_flow_is_identity():
    x = _rand((2, 7, 9, 3))
    np.testing.assert_allclose(ops.warp(x, jnp.zeros((2, 7, 9, 2))), x, atol=1e-6)


@pytest.mark.parametrize("dx,dy", [(1, 0), (0, 2), (-2, 1), (3, -1)])
def test_integer_flow_is_a_shift(dx, dy):
    x = _rand((6, 8, 2), seed=1)
    flow = jnp.broadcast_to(jnp.asarray([dx, dy], jnp.float32), (6, 8, 2))
    out = np.asarray(ops.warp(x, flow))
    # out[i, j] = x[i + dy, j + dx] where inside, else 0 (zeros padding).
    expect = np.zeros_like(out)
    xs = np.asarray(x)
    for i in range(6):
        for j in range(8):
            if 0 <= i + dy < 6 and 0 <= j + dx < 8:
                expect[i, j] = xs[i + dy, j + dx]
    np.testing.assert_allclose(out, expect, atol=1e-6)


def test_border_padding_clamps():
    x = _rand((5, 6, 1), seed=2)
    flow = jnp.broadcast_to(jnp.asarray([10.0, 0.0]), (5, 6, 2))
    out = ops.warp(x, flow, padding="border")
    np.testing.assert_allclose(out, jnp.broadcast_to(x[:, -1:], x.shape), atol=1e-6)


def _map_coordinates_warp(x, flow):
    """Independent formulation: jax.scipy.ndimage.map_coordinates, order 1, zero fill."""
    h, w, c = x.shape
    ii, jj = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
    coords = [ii + flow[..., 1], jj + flow[..., 0]]
    return jnp.stack([ndimage.map_coordinates(x[..., k], coords, order=1, mode="constant",
                                              cval=0.0) for k in range(c)], -1)


@pytest.mark.slow
def test_warp_matches_map_coordinates_values_and_gradients():
    x = _rand((9, 11, 2), seed=3)
    # Keep targets inside so map_coordinates' constant mode and ours agree everywhere.
    flow = _rand((9, 11, 2), seed=4, lo=-0.9, hi=0.9)
    flow = flow.at[0].set(jnp.abs(flow[0])).at[-1].set(-jnp.abs(flow[-1]))
    flow = flow.at[:, 0].set(jnp.abs(flow[:, 0])).at[:, -1].set(-jnp.abs(flow[:, -1]))
    np.testing.assert_allclose(ops.warp(x, flow), _map_coordinates_warp(x, flow), atol=1e-5)
    weights = _rand((9, 11, 2), seed=5)

    def ours(x, f):
        return jnp.sum(ops.warp(x, f) * weights)

    def ref(x, f):
        return jnp.sum(_map_coordinates_warp(x, f) * weights)

    g_ours = jax.grad(ours, argnums=(0, 1))(x, flow)
    g_ref = jax.grad(ref, argnums=(0, 1))(x, flow)
    np.testing.assert_allclose(g_ours[0], g_ref[0], atol=1e-5)
    np.testing.assert_allclose(g_ours[1], g_ref[1], atol=1e-4)


def test_warp_gradients_match_finite_differences():
    x = _rand((5, 6, 2), seed=6)
    flow = _rand((5, 6, 2), seed=7, lo=-1.3, hi=1.3)
    weights = _rand((5, 6, 2), seed=8)

    def loss(x, f):
        return jnp.sum(ops.warp(x, f) * weights)

    gx, gf = jax.grad(loss, argnums=(0, 1))(x, flow)
    eps = 1e-3
    rng = np.random.default_rng(0)
    for _ in range(8):
        idx = tuple(int(rng.integers(0, s)) for s in flow.shape)
        df = jnp.zeros_like(flow).at[idx].set(eps)
        fd = (loss(x, flow + df) - loss(x, flow - df)) / (2 * eps)
        np.testing.assert_allclose(gf[idx], fd, rtol=2e-2, atol=2e-3)
        idx = tuple(int(rng.integers(0, s)) for s in x.shape)
        dx = jnp.zeros_like(x).at[idx].set(eps)
        fd = (loss(x + dx, flow) - loss(x - dx, flow)) / (2 * eps)
        np.testing.assert_allclose(gx[idx], fd, rtol=2e-2, atol=2e-3)


def test_warp_is_jittable_and_batched():
    x = _rand((3, 2, 6, 7, 4), seed=9)
    flow = _rand((3, 2, 6, 7, 2), seed=10, lo=-2, hi=2)
    batched = jax.jit(ops.warp)(x, flow)
    single = ops.warp(x[1, 0], flow[1, 0])
    np.testing.assert_allclose(batched[1, 0], single, atol=1e-6)
    # A flow without batch dims broadcasts against a batched image.
    np.testing.assert_allclose(ops.warp(x, flow[0, 0])[2, 1], ops.warp(x[2, 1], flow[0, 0]),
                               atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3, 19, 22])
@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_the_tpu_form_of_the_warp_equals_the_four_gathers(channels, padding):
    """A TPU compiles ``sample`` as one gather of each pixel's packed 2x2 neighbourhood;
    values and both gradients are those of the four gathers, inside the image, across
    its edges and far outside it."""
    import sys
    warp_module = sys.modules["vsegjax.ops.warp"]
    x = _rand((2, 7, 9, channels), seed=11)
    coords = warp_module.pixel_grid(7, 9) + _rand((2, 7, 9, 2), seed=12, lo=-6, hi=6)
    coords = coords.at[0, 0, 0].set(jnp.array([-1.5, 3.0])).at[0, 0, 1].set(
        jnp.array([8.5, -0.5])).at[0, 0, 2].set(jnp.array([30.0, 2.0]))
    weights = _rand((2, 7, 9, channels), seed=13)

    def loss(form):
        return lambda x, c: jnp.sum(form(x, c, padding) * weights)

    four, quad = warp_module._sample_corners, warp_module._sample_quad
    np.testing.assert_allclose(quad(x, coords, padding), four(x, coords, padding), atol=1e-5)
    for g_quad, g_four in zip(jax.grad(loss(quad), (0, 1))(x, coords),
                              jax.grad(loss(four), (0, 1))(x, coords)):
        np.testing.assert_allclose(g_quad, g_four, atol=1e-5)
    # On this CPU ``warp`` is the four-gather form, bit for bit.
    np.testing.assert_array_equal(ops.warp(x, coords - warp_module.pixel_grid(7, 9)),
                                  four(x, coords, "zeros")) if padding == "zeros" else None


def test_warp_nearest_keeps_labels():
    labels = jnp.asarray(np.random.default_rng(0).integers(0, 5, (6, 8)), jnp.uint8)
    flow = jnp.broadcast_to(jnp.asarray([1.2, -0.8]), (6, 8, 2))  # rounds to (1, -1)
    out = ops.warp_nearest(labels, flow, fill_value=255)
    assert out.dtype == jnp.uint8
    np.testing.assert_array_equal(out[1:, :-1], labels[:-1, 1:])
    assert np.all(np.asarray(out[0]) == 255) and np.all(np.asarray(out[:, -1]) == 255)


@pytest.mark.parametrize("flow_shape,msg", [((6, 8, 3), "H, W, 2"), ((5, 8, 2), "differs")])
def test_bad_flow_shape_is_named(flow_shape, msg):
    with pytest.raises(ValueError, match=msg):
        ops.warp(jnp.zeros((6, 8, 3)), jnp.zeros(flow_shape))


# ----------------------------------------------------------------------------- occlusion
def test_out_of_image_mask_eq3():
    flow = jnp.zeros((4, 5, 2)).at[..., 0].set(2.0)  # everything moves 2 px right
    mask = np.asarray(ops.out_of_image_mask(flow))
    expect = np.zeros((4, 5))
    expect[:, 3:] = 1  # x + 2 > 4 for x in {3, 4}
    np.testing.assert_array_equal(mask, expect)


def test_fb_consistency_flags_inconsistent_pixels():
    fw = jnp.zeros((8, 8, 2)).at[..., 0].set(1.0)
    bw = -fw
    assert float(ops.fb_consistency_mask(fw, bw)[:, :-1].max()) == 0.0
    assert float(ops.fb_consistency_mask(fw, bw)[:, -1].min()) == 1.0  # leaves the image
    bad_bw = bw.at[2:4, 2:5].set(jnp.asarray([3.0, 3.0]))
    mask = np.asarray(ops.fb_consistency_mask(fw, bad_bw))
    # Pixels (i, j) whose target (i, j + 1) has the wrong backward flow.
    assert mask[2:4, 1:4].min() == 1.0 and mask[5:, :6].max() == 0.0


# ----------------------------------------------------------------------------- ssim
def test_ssim_identical_is_one_and_shape_kept():
    a = _rand((2, 10, 12, 3), seed=11)
    s = ops.ssim(a, a)
    assert s.shape == a.shape
    np.testing.assert_allclose(s, 1.0, atol=1e-5)


def test_ssim_drops_for_different_images_and_is_symmetric():
    a = _rand((10, 12, 3), seed=12)
    b = _rand((10, 12, 3), seed=13)
    s = ops.ssim(a, b)
    assert float(s.mean()) < 0.5
    np.testing.assert_allclose(s, ops.ssim(b, a), atol=1e-6)
    assert float(s.max()) <= 1.0 + 1e-6


def test_ssim_known_value_for_constant_images():
    # For constant images var = cov = 0, so SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1).
    a = jnp.full((5, 5, 1), 0.2)
    b = jnp.full((5, 5, 1), 0.6)
    expect = (2 * 0.2 * 0.6 + ops.ssim.__globals__["C1"]) / (0.04 + 0.36 + ops.ssim.__globals__["C1"])
    np.testing.assert_allclose(ops.ssim(a, b), expect, rtol=1e-4)


# ----------------------------------------------------------------------------- gradients
def test_edge_aware_flow_gradients():
    image = jnp.zeros((4, 6, 3)).at[:, 3:].set(1.0)  # vertical edge between x=2 and x=3
    flow = jnp.zeros((4, 6, 2)).at[:, 3:, 0].set(5.0)  # motion boundary on the same edge
    gx, gy = ops.edge_aware_flow_gradients(flow, image, alpha=10.0)
    assert gx.shape == (4, 5, 2) and gy.shape == (3, 6, 2)
    np.testing.assert_allclose(gx[:, 2, 0], 5.0 * np.exp(-10.0), rtol=1e-5)
    assert float(gy.max()) == 0.0
    # Without the image edge the same flow edge costs the full 5.
    gx_flat, _ = ops.edge_aware_flow_gradients(flow, jnp.zeros((4, 6, 3)))
    np.testing.assert_allclose(gx_flat[:, 2, 0], 5.0)


# ----------------------------------------------------------------------------- correlation
def test_correlation_peaks_at_true_displacement():
    f1 = _rand((12, 12, 64), seed=14, lo=-1, hi=1)
    dx, dy = 2, -1
    # f2[i + dy, j + dx] = f1[i, j]: content moved by (dx, dy).
    f2 = jnp.roll(f1, shift=(dy, dx), axis=(0, 1))
    d = 3
    cv = ops.correlation(f1, f2, max_displacement=d)
    n = 2 * d + 1
    assert cv.shape == (12, 12, n * n)
    best = np.asarray(jnp.argmax(cv[4:8, 4:8], axis=-1))
    assert np.all(best == (dy + d) * n + (dx + d))
    np.testing.assert_allclose(cv[6, 6, (dy + d) * n + dx + d], jnp.mean(f1[6, 6] ** 2), rtol=1e-5)


def test_correlation_stride():
    f = _rand((6, 6, 4), seed=15)
    assert ops.correlation(f, f, max_displacement=4, stride=2).shape == (6, 6, 25)


# ----------------------------------------------------------------------------- flow
def test_resize_flow_scales_vectors():
    flow = jnp.broadcast_to(jnp.asarray([2.0, -1.0]), (2, 8, 10, 2))
    out = ops.resize_flow(flow, 16, 5)
    assert out.shape == (2, 16, 5, 2)
    np.testing.assert_allclose(out[..., 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[..., 1], -2.0, atol=1e-6)


def test_compose_flow_of_translations_adds():
    a = jnp.broadcast_to(jnp.asarray([1.0, 2.0]), (8, 9, 2))
    b = jnp.broadcast_to(jnp.asarray([-3.0, 0.5]), (8, 9, 2))
    np.testing.assert_allclose(ops.compose_flow(a, b), a + b, atol=1e-6)


def test_compose_flow_equals_sequential_warps():
    # Warping by the composed flow equals warping twice: warp(warp(x, f_bc), f_ab).
    yy, xx = np.mgrid[0:16, 0:16].astype(np.float32)
    # A smooth image, so the double interpolation of the sequential warps blurs little.
    x = jnp.asarray((np.sin(xx / 3) * np.cos(yy / 4))[..., None])
    f_ab = jnp.stack([0.3 * np.sin(yy / 4), 0.2 * np.cos(xx / 5)], -1)
    f_bc = jnp.stack([0.25 * np.cos(yy / 3), -0.3 * np.sin(xx / 6)], -1)
    composed = ops.warp(x, ops.compose_flow(f_ab, f_bc))
    twice = ops.warp(ops.warp(x, f_bc), f_ab)
    inner = (slice(2, -2), slice(2, -2))
    assert float(jnp.abs(composed - twice)[inner].mean()) < 0.02
    assert float(jnp.abs(composed - twice)[inner].mean()) < 0.2 * float(
        jnp.abs(ops.warp(x, f_ab) - twice)[inner].mean())


# ----------------------------------------------------------------------------- conv
@pytest.mark.slow
@pytest.mark.parametrize("k,cin,cout", [(1, 4, 3), (3, 4, 3), (7, 4, 3),
                                         (3, 38, 38), (3, 38, 19), (3, 19, 38)])
def test_conv2d_same_matches_xla_values_and_gradients(k, cin, cout):
    """Including 38 channels, which the CPU runs zero-padded to 40."""
    x = _rand((1, 6, 7, cin), seed=20, lo=-1, hi=1)
    kernel = _rand((k, k, cin, cout), seed=21, lo=-1, hi=1)
    weights = _rand((1, 6, 7, cout), seed=22)

    def ref(x, kernel):
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    np.testing.assert_allclose(ops.conv2d_same(x, kernel), ref(x, kernel), atol=1e-4)
    g_ours = jax.grad(lambda x, w: jnp.sum(ops.conv2d_same(x, w) * weights), (0, 1))(x, kernel)
    g_ref = jax.grad(lambda x, w: jnp.sum(ref(x, w) * weights), (0, 1))(x, kernel)
    for ours, want in zip(g_ours, g_ref):
        np.testing.assert_allclose(ours, want, atol=1e-4, rtol=1e-4)


def test_conv2d_same_pads_channels_only_where_it_adds_a_tenth():
    from vsegjax.ops import conv
    assert [conv.padded_channels(n) for n in (3, 19, 20, 38, 40, 77)] == [3, 19, 20, 40, 40, 80]


def test_conv2d_same_gradient_is_per_tap_on_cpu_and_xla_elsewhere():
    from vsegjax.ops import conv
    x = _rand((2, 9, 11, 4), seed=23, lo=-1, hi=1)
    kernel = _rand((3, 3, 4, 5), seed=24, lo=-1, hi=1)
    g = _rand((2, 9, 11, 5), seed=25)
    for ours, xla in zip(conv._cpu_bwd(x, kernel, g), conv._xla_bwd(x, kernel, g)):
        np.testing.assert_allclose(ours, xla, atol=1e-4, rtol=1e-4)
    grad = jax.jit(jax.grad(lambda x, w: jnp.sum(ops.conv2d_same(x, w) * g), (0, 1)))

    def program(platform):  # the gradient's program when lowered for `platform`
        return jax.export.export(grad, platforms=[platform])(x, kernel).mlir_module()
    cpu = program("cpu")
    # The kernel gradient: one matmul per tap, the taps a loop.
    assert cpu.count("stablehlo.dot_general") >= 1 and "stablehlo.while" in cpu
    assert all(program(p).count("stablehlo.dot_general") == 0 for p in ("tpu", "cuda"))


@pytest.mark.parametrize("shape", [(7, 7, 3, 1), (3, 3, 3, 3), (1, 1, 4, 2), (5, 3, 2, 1)])
def test_the_tpu_form_of_a_small_convolution_is_the_convolution(shape):
    """A TPU runs a convolution with few multiply-adds per pixel (the STGRU's 3 -> 1 gate)
    as a sum of shifted copies: same values and gradients; larger ones stay XLA's."""
    from vsegjax.ops import conv
    x = _rand((2, 9, 11, shape[2]), seed=26, lo=-1, hi=1)
    kernel = _rand(shape, seed=27, lo=-1, hi=1)
    g = _rand((2, 9, 11, shape[3]), seed=28)
    np.testing.assert_allclose(conv._shifted_sum(x, kernel), conv._conv(x, kernel), atol=1e-5)
    for ours, xla in zip(conv._tpu_bwd(x, kernel, g), conv._xla_bwd(x, kernel, g)):
        np.testing.assert_allclose(ours, xla, atol=1e-4, rtol=1e-5)

    def program(kernel_shape):  # conv2d_same's gradient as lowered for a TPU
        grad = jax.jit(jax.grad(lambda x, w: jnp.sum(ops.conv2d_same(x, w)), (0, 1)))
        args = (jax.ShapeDtypeStruct((1, 16, 16, kernel_shape[2]), jnp.float32),
                jax.ShapeDtypeStruct(kernel_shape, jnp.float32))
        return jax.export.export(grad, platforms=["tpu"])(*args).mlir_module()
    assert "stablehlo.convolution" not in program(shape)
    assert "stablehlo.convolution" in program((7, 7, 19, 19))


def test_conv2d_same_kernel_gradient_memory_is_bounded():
    """The 7x7 kernel gradient keeps one shifted copy of the input alive, not 49: XLA's
    temporaries for the whole gradient stay within 8x the input's bytes (51x when the
    taps were written out)."""
    x = jax.ShapeDtypeStruct((1, 64, 64, 19), jnp.float32)
    kernel = jax.ShapeDtypeStruct((7, 7, 19, 19), jnp.float32)
    grad = jax.jit(jax.grad(lambda x, w: jnp.sum(ops.conv2d_same(x, w) ** 2), (0, 1)))
    temp = grad.lower(x, kernel).compile().memory_analysis().temp_size_in_bytes
    assert temp < 8 * 64 * 64 * 19 * 4, temp / (64 * 64 * 19 * 4)


def test_conv2d_same_rejects_even_kernels():
    with pytest.raises(ValueError, match="odd"):
        jax.grad(lambda w: jnp.sum(ops.conv2d_same(jnp.ones((1, 4, 4, 1)), w)))(jnp.ones((2, 2, 1, 1)))
