"""STGRU cell (eqs. 2-6 of the GRFP paper) and the GRFP recurrent model."""

from types import SimpleNamespace

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vsegjax.methods.grfp.stgru import (GRFP, PARAM_NAMES, STGRUCell, stgru_step,
                                  stgru_step_unfused)

B, T, H, W, C = 2, 4, 16, 16, 3


def _rng(seed=0):
    return np.random.default_rng(seed)


def _inputs(t=T, seed=0, b=B, h=H, w=W, c=C):
    rng = _rng(seed)
    static = jnp.asarray(rng.normal(0, 2, (b, t, h, w, c)), jnp.float32)
    frames = jnp.asarray(rng.uniform(0, 1, (b, t, h, w, 3)), jnp.float32)
    flow_fwd = jnp.asarray(rng.uniform(-2, 2, (b, t - 1, h, w, 2)), jnp.float32)
    flow_bwd = jnp.asarray(rng.uniform(-2, 2, (b, t - 1, h, w, 2)), jnp.float32)
    return static, frames, flow_fwd, flow_bwd


def _sub_jaxprs(eqn):
    """Jaxprs nested in an equation's parameters (scan bodies, checkpointed steps, ...)."""
    for value in eqn.params.values():
        for v in (value if isinstance(value, (tuple, list)) else (value,)):
            if isinstance(v, jax.extend.core.ClosedJaxpr):
                yield v.jaxpr
            elif isinstance(v, jax.extend.core.Jaxpr):
                yield v


def _count_eqns(jaxpr) -> int:
    return sum(1 + sum(_count_eqns(sub) for sub in _sub_jaxprs(eqn)) for eqn in jaxpr.eqns)


def _primitives(jaxpr) -> set:
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in _sub_jaxprs(eqn):
            names |= _primitives(sub)
    return names


# ----------------------------------------------------------------- numpy reference
def _np_warp(x, flow):
    """Backward bilinear warp with zero padding: out[i, j] = x(i + fy, j + fx)."""
    b, h, w, c = x.shape
    out = np.zeros_like(x, dtype=np.float64)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                sx, sy = j + flow[n, i, j, 0], i + flow[n, i, j, 1]
                x0, y0 = int(np.floor(sx)), int(np.floor(sy))
                for yy in (y0, y0 + 1):
                    for xx in (x0, x0 + 1):
                        wgt = max(0.0, 1 - abs(sx - xx)) * max(0.0, 1 - abs(sy - yy))
                        if 0 <= yy < h and 0 <= xx < w:
                            out[n, i, j] += wgt * x[n, yy, xx]
    return out


def _np_conv(x, k):
    """SAME cross-correlation, NHWC x HWIO."""
    kh, kw, _, cout = k.shape
    b, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros((b, h, w, cout))
    for di in range(kh):
        for dj in range(kw):
            out += np.einsum("bhwc,co->bhwo", xp[:, di:di + h, dj:dj + w], k[di, dj])
    return out


def _np_softmax(a):
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_stgru(p, h_prev, x, frame, prev_frame, flow, center):
    c = x.shape[-1]
    if center:
        x, h_prev = x - 1.0 / c, h_prev - 1.0 / c
    w = _np_warp(h_prev, flow)                                                   # (2)
    r = 1 - np.tanh(np.abs(_np_conv(frame - _np_warp(prev_frame, flow), p["W_ir"])
                           + p["b_r"]))                                          # (3)
    h_tilde = _np_conv(x, p["W_xh"]) + _np_conv(r * w, p["W_hh"])                # (4)
    z = 1 / (1 + np.exp(-(_np_conv(x, p["W_xz"]) + _np_conv(r * w, p["W_hz"]) + p["b_z"])))  # (5)
    logits = p["lambda"] * (1 - z) * r * w + z * h_tilde                         # (6)
    return _np_softmax(logits), logits, r


def _cell_inputs(seed=0, b=B, h=8, w=8, c=C):
    rng = _rng(seed)
    h_prev = _np_softmax(rng.normal(0, 2, (b, h, w, c)))
    x = _np_softmax(rng.normal(0, 2, (b, h, w, c)))
    frame = rng.uniform(0, 1, (b, h, w, 3))
    prev_frame = rng.uniform(0, 1, (b, h, w, 3))
    flow = rng.uniform(-2.5, 2.5, (b, h, w, 2))  # fractional, partly out of the image
    return [np.asarray(a, np.float32) for a in (h_prev, x, frame, prev_frame, flow)]


def _set_params(k, c, seed=0, gate_channels=None, **override):
    rng = _rng(seed)
    g = c if gate_channels is None else gate_channels
    p = {"W_ir": rng.normal(0, 0.5, (k, k, 3, 1)), "b_r": rng.normal(0, 0.5, (1,)),
         "W_xh": rng.normal(0, 1, (k, k, c, c)), "W_hh": rng.normal(0, 1, (k, k, c, c)),
         "W_xz": rng.normal(0, 1, (k, k, c, g)), "W_hz": rng.normal(0, 1, (k, k, c, g)),
         "b_z": rng.normal(0, 1, (c,)), "lambda": np.asarray(1.7)}
    p.update(override)
    return {n: np.asarray(v, np.float32) for n, v in p.items()}


# ------------------------------------------------------------------- parameter tree
@pytest.mark.slow
@pytest.mark.parametrize("k", [7, 3])
def test_cell_parameter_tree(k):
    cell = STGRUCell(num_classes=C, kernel_size=k)
    h_prev, x, frame, prev_frame, flow = _cell_inputs()
    params = cell.init(jax.random.PRNGKey(0), h_prev, x, frame, prev_frame, flow)["params"]
    assert set(params) == set(PARAM_NAMES)
    shapes = {n: params[n].shape for n in PARAM_NAMES}
    assert shapes == {"W_ir": (k, k, 3, 1), "b_r": (1,), "W_xh": (k, k, C, C),
                      "W_hh": (k, k, C, C), "W_xz": (k, k, C, C), "W_hz": (k, k, C, C),
                      "b_z": (C,), "lambda": ()}
    assert float(params["lambda"]) == 1.0
    # Identity init: the centre tap of W_xh / W_hh is ~ scale * I, the others ~ 0.
    centre = np.asarray(params["W_xh"][k // 2, k // 2])
    np.testing.assert_allclose(centre, 6.0 * np.eye(C), atol=0.1)
    off = np.asarray(params["W_hh"]).copy()
    off[k // 2, k // 2] = 0
    assert np.abs(off).max() < 0.1


def test_grfp_parameter_trees():
    static, frames, ff, fb = _inputs()
    key = jax.random.PRNGKey(0)
    for mode, subtrees in (("forward", {"forward"}), ("backward", {"backward"}),
                           ("fwbw", {"forward", "backward", "fusion"})):
        for lp in (0, T - 1):  # the tree does not depend on the labelled frame
            params = jax.eval_shape(lambda: GRFP(C, mode).init(key, static, frames, ff, fb,
                                                               lp))["params"]
            assert set(params) == subtrees, (mode, lp)
            for d in subtrees - {"fusion"}:
                assert set(params[d]) == set(PARAM_NAMES)
                assert params[d]["W_xh"].shape == (7, 7, C, C)
    assert params["fusion"]["kernel"].shape == (1, 1, 2 * C, C)
    params = GRFP(C, "fwbw", kernel_size=3).init(key, static, frames, ff, fb, 1)["params"]
    # Separate parameters per direction.
    assert not np.allclose(params["forward"]["W_xz"], params["backward"]["W_xz"])


def test_no_identity_init():
    h_prev, x, frame, prev_frame, flow = _cell_inputs()
    params = STGRUCell(C, kernel_size=3, identity_init=False).init(
        jax.random.PRNGKey(0), h_prev, x, frame, prev_frame, flow)["params"]
    centre = np.asarray(params["W_xh"][1, 1])
    assert np.abs(np.diag(centre)).max() < 3.0  # lecun-normal, not 6 * I


def test_shared_update_gate_parameter_tree():
    """update_gate='shared' (the authors' code): W_xz, W_hz are [k,k,C,1], b_z stays [C]."""
    params = jax.eval_shape(lambda: STGRUCell(C, kernel_size=5, update_gate="shared").init(
        jax.random.PRNGKey(0), *_cell_inputs()))["params"]
    assert set(params) == set(PARAM_NAMES)
    assert params["W_xz"].shape == params["W_hz"].shape == (5, 5, C, 1)
    assert params["b_z"].shape == (C,) and params["W_xh"].shape == (5, 5, C, C)
    with pytest.raises(ValueError, match="update_gate"):
        jax.eval_shape(lambda: STGRUCell(C, update_gate="per_pixel").init(
            jax.random.PRNGKey(0), *_cell_inputs()))


# ------------------------------------------------------------- eqs. (2)-(6) by hand
@pytest.mark.parametrize("k,center,gate", [(1, False, "per_class"), (1, True, "per_class"),
                                           (3, True, "per_class"), (3, True, "shared")])
def test_cell_matches_numpy_equations(k, center, gate):
    h_prev, x, frame, prev_frame, flow = _cell_inputs(seed=k)
    p = _set_params(k, C, seed=k, gate_channels=C if gate == "per_class" else 1)
    cell = STGRUCell(C, kernel_size=k, center_inputs=center, update_gate=gate)
    h, logits, r = cell.apply({"params": p}, h_prev, x, frame, prev_frame, flow)
    h_ref, logits_ref, r_ref = _np_stgru(p, h_prev, x, frame, prev_frame, flow, center)
    assert r.shape == (B, 8, 8, 1)
    np.testing.assert_allclose(r, r_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits, logits_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(h, h_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.sum(h, -1), 1.0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("k,c,gate", [(3, 3, "per_class"), (3, 3, "shared"),
                                      (7, 19, "per_class"), (5, 19, "shared")])
def test_fused_step_equals_the_unfused_equations(k, c, gate):
    """One gather and one gate convolution (channels padded to multiples of 8 on the CPU
    at C = 19) give the values and gradients of eqs. (2)-(6) as written, to 1e-5."""
    inputs = [jnp.asarray(a) for a in _cell_inputs(seed=c, h=12, w=10, c=c)]
    p = {n: jnp.asarray(v) * (0.1 if n.startswith("W_") and n != "W_ir" else 1.0)
         for n, v in _set_params(k, c, seed=c, gate_channels=c if gate == "per_class"
                                 else 1).items()}
    weights = jnp.asarray(_rng(2).normal(0, 1, (B, 12, 10, c)), jnp.float32)

    def loss(step):
        def f(params, *args):
            h, logits, r = step(params, *args)
            return jnp.sum(weights * logits) + jnp.sum(h ** 2) + jnp.sum(r)
        return jax.jit(jax.value_and_grad(f, argnums=tuple(range(6))))

    (v_fused, g_fused), (v_ref, g_ref) = (loss(stgru_step)(p, *inputs),
                                          loss(stgru_step_unfused)(p, *inputs))
    out_fused, out_ref = stgru_step(p, *inputs), stgru_step_unfused(p, *inputs)
    for a, b in zip(out_fused, out_ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v_fused, v_ref, rtol=1e-5)
    for name, a, b in zip(("params", "h_prev", "x", "frame", "prev_frame", "flow"),
                          g_fused, g_ref):
        for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            scale = float(jnp.max(jnp.abs(leaf_b))) + 1e-6
            np.testing.assert_allclose(leaf_a / scale, leaf_b / scale, atol=1e-5,
                                       err_msg=f"gradient w.r.t. {name}")


# ------------------------------------------------------------ identity-init property
def test_identity_init_passes_information():
    """r = 1 (identical frames, zero flow): the untrained cell keeps the class."""
    rng = _rng(5)
    cls = rng.integers(0, C, (B, 1, 1))
    conf = np.where(np.arange(C) == cls[..., None], 0.8, 0.2 / (C - 1))  # [B,1,1,C]
    x = np.broadcast_to(conf, (B, H, W, C)).astype(np.float32)
    frame = np.broadcast_to(rng.uniform(0, 1, (1, H, W, 3)), (B, H, W, 3)).astype(np.float32)
    flow = np.zeros((B, H, W, 2), np.float32)
    cell = STGRUCell(C)
    params = cell.init(jax.random.PRNGKey(0), x, x, frame, frame, flow)
    h, logits, r = cell.apply(params, x, x, frame, frame, flow)
    np.testing.assert_allclose(r, 1.0, atol=1e-6)
    np.testing.assert_array_equal(np.argmax(h, -1), np.broadcast_to(cls, (B, H, W)))
    # No static evidence (uniform x): the warped previous estimate alone decides.
    uniform = np.full_like(x, 1.0 / C)
    h, _, _ = cell.apply(params, x, uniform, frame, frame, flow)
    np.testing.assert_array_equal(np.argmax(h, -1), np.broadcast_to(cls, (B, H, W)))
    assert float(np.min(np.max(h, -1))) > 0.8  # and stays confident
    # Conversely the static input alone decides when the previous estimate is uninformative.
    h, _, _ = cell.apply(params, uniform, x, frame, frame, flow)
    np.testing.assert_array_equal(np.argmax(h, -1), np.broadcast_to(cls, (B, H, W)))


# -------------------------------------------------------------------- warping (eq. 2)
def _shift(a, dx, dy):
    """out[i, j] = a[i + dy, j + dx], zero outside (what warping with flow (dx, dy) gives)."""
    out = np.zeros_like(a)
    h, w = a.shape[-3:-1]
    for i in range(h):
        for j in range(w):
            if 0 <= i + dy < h and 0 <= j + dx < w:
                out[..., i, j, :] = a[..., i + dy, j + dx, :]
    return out


@pytest.mark.parametrize("dx,dy", [(2, 1), (-3, 0)])
def test_cell_warps_previous_estimate(dx, dy):
    """With z = 0, r = 1 and lambda = 1 the softmax argument is exactly w_t = warp(h_{t-1})."""
    k = 3
    zeros = np.zeros((k, k, C, C), np.float32)
    p = _set_params(k, C, W_ir=np.zeros((k, k, 3, 1)), b_r=np.zeros(1), W_xh=zeros,
                    W_hh=zeros, W_xz=zeros, W_hz=zeros, b_z=np.full(C, -40.0),
                    **{"lambda": np.asarray(1.0)})
    h_prev = np.zeros((B, H, W, C), np.float32)
    h_prev[..., 0] = 1.0
    h_prev[:, 5:9, 6:10] = np.eye(C)[1]  # a blob of class 1
    x = np.full((B, H, W, C), 1.0 / C, np.float32)
    frame = np.zeros((B, H, W, 3), np.float32)
    flow = np.broadcast_to(np.asarray([dx, dy], np.float32), (B, H, W, 2))
    _, logits, r = STGRUCell(C, kernel_size=k, center_inputs=False).apply(
        {"params": p}, h_prev, x, frame, frame, flow)
    np.testing.assert_allclose(r, 1.0)
    np.testing.assert_allclose(logits, _shift(h_prev, dx, dy), atol=1e-6)


def _moving_blob(t_len=T, v=(2, 1), h=H, w=W):
    """Labels [B,T,H,W] of a square moving by v = (vx, vy) pixels per frame, matching
    frames, and the exact flows (fwd = +v, bwd = -v)."""
    labels = np.zeros((B, t_len, h, w), np.int32)
    for t in range(t_len):
        y0, x0 = 3 + v[1] * t, 2 + v[0] * t
        labels[:, t, y0:y0 + 4, x0:x0 + 4] = 1
    palette = np.asarray([[0.1, 0.2, 0.3], [0.9, 0.5, 0.1], [0.2, 0.8, 0.6]], np.float32)
    frames = palette[labels]
    ff = np.broadcast_to(np.asarray(v, np.float32), (B, t_len - 1, h, w, 2)).copy()
    return labels, frames, ff, -ff


# ------------------------------------------------------------------------ gate (eq. 3)
def test_gate_drops_where_the_warped_image_differs():
    rng = _rng(7)
    prev = rng.uniform(0, 1, (B, H, W, 3)).astype(np.float32)
    dx, dy = 1, 2
    flow = np.broadcast_to(np.asarray([dx, dy], np.float32), (B, H, W, 2))
    frame = _shift(prev, dx, dy)                         # I_t == warp(I_{t-1})
    frame[:, :, W // 2:] = rng.uniform(0, 1, (B, H, W - W // 2, 3))  # except the right half
    h_prev = np.full((B, H, W, C), 1.0 / C, np.float32)
    # Hand-set 1x1 gate: r = 1 - tanh(|2 * sum_c diff_c|).
    p = _set_params(1, C, W_ir=np.full((1, 1, 3, 1), 2.0), b_r=np.zeros(1))
    _, _, r = STGRUCell(C, kernel_size=1).apply({"params": p}, h_prev, h_prev, frame, prev, flow)
    r = np.asarray(r)[..., 0]
    np.testing.assert_allclose(r[:, :, : W // 2], 1.0, atol=1e-6)
    assert r[:, :, W // 2:].mean() < 0.5
    # Default-initialised 7x7 gate: exactly 1 away from the mismatch, lower on it.
    cell = STGRUCell(C)
    params = cell.init(jax.random.PRNGKey(3), h_prev, h_prev, frame, prev, flow)
    _, _, r = cell.apply(params, h_prev, h_prev, frame, prev, flow)
    r = np.asarray(r)[..., 0]
    np.testing.assert_allclose(r[:, : H - dy - 3, : W // 2 - 3], 1.0, atol=1e-6)
    assert r[:, :, W // 2 + 3:].mean() < 0.97


# --------------------------------------------------------- compile time independent of T
@pytest.mark.parametrize("mode", ["forward", "fwbw"])
def test_jaxpr_size_does_not_grow_with_T(mode):
    sizes = []
    for t_len in (3, 9):
        static, frames, ff, fb = _inputs(t=t_len, h=8, w=8)
        lp = t_len - 1 if mode == "forward" else t_len // 2
        model = GRFP(C, mode, kernel_size=3)
        variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), static, frames,
                                                      ff, fb, lp))
        jaxpr = jax.make_jaxpr(lambda v, s: model.apply(v, s, frames, ff, fb, lp))(
            variables, static)
        assert "scan" in _primitives(jaxpr.jaxpr)
        sizes.append(_count_eqns(jaxpr.jaxpr))
    assert sizes[0] == sizes[1]




def test_bfloat16_compute_traces():
    static, frames, ff, fb = _inputs(h=8, w=8)
    model = GRFP(C, "fwbw", kernel_size=3, dtype=jnp.bfloat16)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), static, frames, ff,
                                                  fb, 1))
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(variables))
    out = jax.eval_shape(lambda v: model.apply(v, static, frames, ff, fb, 1), variables)
    assert out["logits"].dtype == jnp.float32 and out["seq_logits"].shape == static.shape


@pytest.mark.slow
def test_bfloat16_step_close_to_float32_with_float32_gradients():
    """dtype=bfloat16 computes the gates in bfloat16; outputs and parameter gradients stay
    float32 and near the float32 step."""
    inputs = [jnp.asarray(a) for a in _cell_inputs(seed=4, h=12, w=10, c=19)]
    p = {n: jnp.asarray(v) * (0.1 if n.startswith("W_") and n != "W_ir" else 1.0)
         for n, v in _set_params(5, 19, seed=4).items()}
    h32, logits32, _ = stgru_step(p, *inputs)
    h16, logits16, _ = stgru_step(p, *inputs, dtype=jnp.bfloat16)
    assert h16.dtype == logits16.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(h16 - h32))) < 0.02
    assert float(jnp.max(jnp.abs(logits16 - logits32))) < 0.05 * float(jnp.max(jnp.abs(logits32)))
    grads = jax.grad(lambda q: jnp.sum(stgru_step(q, *inputs, dtype=jnp.bfloat16)[1] ** 2))(p)
    ref = jax.grad(lambda q: jnp.sum(stgru_step(q, *inputs)[1] ** 2))(p)
    for name in PARAM_NAMES:
        assert grads[name].dtype == jnp.float32, name
        rel = jnp.linalg.norm(grads[name] - ref[name]) / (jnp.linalg.norm(ref[name]) + 1e-9)
        # bfloat16 keeps 8 significant bits: the kernels' gradients stay within 5%; those
        # of the scalars and biases, sums over every pixel, within 25%.
        assert float(rel) < (0.05 if name.startswith("W_") else 0.25), (name, float(rel))


# ------------------------------------------------------------- shared fwbw model
LP = 2  # labelled frame of the shared T=4 window


@pytest.fixture(scope="module")
def fwbw():
    """An fwbw GRFP (3x3 kernels) on random inputs with its parameters, a jitted apply and
    a jitted NLL value-and-grad, compiled once for the tests below."""
    model = GRFP(C, "fwbw", kernel_size=3)
    static, frames, ff, fb = _inputs(seed=3)
    variables = jax.jit(model.init, static_argnums=5)(jax.random.PRNGKey(1), static, frames,
                                                      ff, fb, LP)
    labels = jnp.asarray(_rng(1).integers(0, C, (B, H, W)))

    def value_and_grad(m):
        def loss(params, s):
            out = m.apply({"params": params}, s, frames, ff, fb, LP)
            nll = -jnp.mean(jnp.take_along_axis(out["logits"], labels[..., None], -1))
            return nll - 0.1 * jnp.mean(out["seq_logits"][..., 1])
        return loss, jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))

    loss, grad = value_and_grad(model)
    return SimpleNamespace(model=model, static=static, frames=frames, ff=ff, fb=fb,
                           params=variables["params"], labels=labels,
                           apply=jax.jit(model.apply, static_argnums=5), loss=loss, grad=grad,
                           value_and_grad=value_and_grad)


def _run(m, params, static=None, frames=None, ff=None, fb=None, lp=LP):
    return m.apply({"params": params}, m.static if static is None else static,
                   m.frames if frames is None else frames, m.ff if ff is None else ff,
                   m.fb if fb is None else fb, lp)


def test_grfp_scan_matches_step_loop(fwbw):
    """The scanned forward and backward passes equal a Python loop of single cell steps."""
    out = _run(fwbw, fwbw.params)
    static, frames, ff, fb = fwbw.static, fwbw.frames, fwbw.ff, fwbw.fb
    probs = jax.nn.softmax(static, -1)
    cell = STGRUCell(C, kernel_size=3)
    pf = {"params": fwbw.params["forward"]}
    pb = {"params": fwbw.params["backward"]}
    h = probs[:, 0]
    for t in range(1, LP + 1):
        h, logits, r = cell.apply(pf, h, probs[:, t], frames[:, t], frames[:, t - 1], fb[:, t - 1])
        np.testing.assert_allclose(out["seq_logits"][:, t], jax.nn.log_softmax(logits), atol=1e-5)
        np.testing.assert_allclose(out["r"][:, t], r, atol=1e-6)
    np.testing.assert_allclose(out["logits_fwd"], jax.nn.log_softmax(logits), atol=1e-5)
    h = probs[:, T - 1]
    for t in range(T - 2, LP - 1, -1):
        h, logits, r = cell.apply(pb, h, probs[:, t], frames[:, t], frames[:, t + 1], ff[:, t])
        np.testing.assert_allclose(out["seq_logits_bwd"][:, t], jax.nn.log_softmax(logits),
                                   atol=1e-5)
        np.testing.assert_allclose(out["r_bwd"][:, t], r, atol=1e-6)
    np.testing.assert_allclose(out["logits_bwd"], jax.nn.log_softmax(logits), atol=1e-5)
    # Frames a pass does not reach hold the static log-probabilities, with r = 1.
    static_lp = jax.nn.log_softmax(static)
    np.testing.assert_allclose(out["seq_logits"][:, 0], static_lp[:, 0], atol=1e-6)
    np.testing.assert_allclose(out["seq_logits"][:, 3], static_lp[:, 3], atol=1e-6)
    np.testing.assert_allclose(out["seq_logits_bwd"][:, 3], static_lp[:, 3], atol=1e-6)
    np.testing.assert_allclose(out["static_logits"], static_lp[:, LP], atol=1e-6)
    assert np.all(np.asarray(out["r"][:, 0]) == 1) and np.all(np.asarray(out["r"][:, 3]) == 1)
    assert out["seq_logits"].shape == (B, T, H, W, C) and out["r"].shape == (B, T, H, W, 1)


def test_directions_use_their_own_parameters_and_frames(fwbw):
    out = _run(fwbw, fwbw.params)

    def bumped(direction):
        p = dict(fwbw.params)
        p[direction] = dict(p[direction], W_xh=p[direction]["W_xh"] * 1.5)
        return _run(fwbw, p)

    o = bumped("backward")
    np.testing.assert_allclose(o["logits_fwd"], out["logits_fwd"], atol=1e-6)
    assert not np.allclose(o["logits_bwd"], out["logits_bwd"], atol=1e-3)
    o = bumped("forward")
    np.testing.assert_allclose(o["logits_bwd"], out["logits_bwd"], atol=1e-6)
    assert not np.allclose(o["logits_fwd"], out["logits_fwd"], atol=1e-3)
    # The forward pass ignores frames after label_pos, the backward pass those before it.
    o = _run(fwbw, fwbw.params, static=fwbw.static.at[:, LP + 1:].set(0.0))
    np.testing.assert_allclose(o["logits_fwd"], out["logits_fwd"], atol=1e-6)
    assert not np.allclose(o["logits_bwd"], out["logits_bwd"], atol=1e-3)
    o = _run(fwbw, fwbw.params, static=fwbw.static.at[:, :LP].set(0.0))
    np.testing.assert_allclose(o["logits_bwd"], out["logits_bwd"], atol=1e-6)
    assert not np.allclose(o["logits_fwd"], out["logits_fwd"], atol=1e-3)
    # mode='backward' with the backward subtree is the backward half of 'fwbw'.
    bwd = GRFP(C, "backward", kernel_size=3)
    o = jax.jit(bwd.apply, static_argnums=5)({"params": {"backward": fwbw.params["backward"]}},
                                             fwbw.static, fwbw.frames, fwbw.ff, None, LP)
    np.testing.assert_allclose(o["logits"], out["logits_bwd"], atol=1e-6)
    np.testing.assert_allclose(o["seq_logits"], out["seq_logits_bwd"], atol=1e-6)


def test_fwbw_fusion_starts_as_the_average(fwbw):
    out = _run(fwbw, fwbw.params)
    expect = jax.nn.log_softmax(0.5 * out["logits_fwd"] + 0.5 * out["logits_bwd"])
    np.testing.assert_allclose(out["logits"], expect, atol=1e-5)
    assert not np.allclose(out["logits_fwd"], out["logits_bwd"], atol=1e-2)
    # A time-symmetric window with equal parameters in both directions: fwd == bwd == fused.
    t_len, lp = 3, 1
    static = fwbw.static[:, :t_len].at[:, 2].set(fwbw.static[:, 0])
    frames = fwbw.frames[:, :t_len].at[:, 2].set(fwbw.frames[:, 0])
    zero = jnp.zeros((B, t_len - 1, H, W, 2))
    params = dict(fwbw.params, backward=fwbw.params["forward"])
    out = fwbw.apply({"params": params}, static, frames, zero, zero, lp)
    np.testing.assert_allclose(out["logits_fwd"], out["logits_bwd"], atol=1e-6)
    np.testing.assert_allclose(out["logits"], out["logits_fwd"], atol=1e-5)
    np.testing.assert_allclose(jnp.exp(out["logits"]).sum(-1), 1.0, atol=1e-5)


def test_gradients_finite_and_nonzero(fwbw):
    loss, (gp, gs) = fwbw.grad(fwbw.params, fwbw.static)
    assert np.isfinite(float(loss))
    for g in jax.tree.leaves((gp, gs)):
        assert np.all(np.isfinite(g))
    for direction in ("forward", "backward"):
        for name in ("W_xh", "W_hh", "W_ir", "lambda"):
            assert np.abs(np.asarray(gp[direction][name])).max() > 0, (direction, name)
    assert np.abs(np.asarray(gp["fusion"]["kernel"])).max() > 0
    gs = np.abs(np.asarray(gs))
    # Every frame's static logits reach the labelled frame (forward 0..2, backward 3..2).
    for t in range(T):
        assert gs[:, t].max() > 0, t


def test_remat_same_outputs_and_gradients(fwbw):
    remat = GRFP(C, "fwbw", kernel_size=3, remat=True)
    remat_loss, remat_grad = fwbw.value_and_grad(remat)
    for loss, on in ((fwbw.loss, False), (remat_loss, True)):
        names = _primitives(jax.make_jaxpr(loss)(fwbw.params, fwbw.static).jaxpr)
        assert any("remat" in n or "checkpoint" in n for n in names) == on
    l0, g0 = fwbw.grad(fwbw.params, fwbw.static)
    l1, g1 = remat_grad(fwbw.params, fwbw.static)
    np.testing.assert_allclose(l0, l1, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g0, g1)


# ---------------------------------------------------------- propagation along the flow
def test_grfp_follows_the_flow():
    """Static evidence only on the first and last frames: the untrained model (default 7x7
    cells) carries the blob forwards along flow_bwd (t -> t-1) and backwards along
    flow_fwd (t -> t+1), so every frame shows it at its moved position."""
    t_len, lp = 5, 2
    labels, frames, ff, fb = _moving_blob(t_len=t_len)
    static = np.zeros((B, t_len, H, W, C), np.float32)
    static[:, 0] = 5.0 * np.eye(C)[labels[:, 0]]
    static[:, -1] = 5.0 * np.eye(C)[labels[:, -1]]
    model = GRFP(C, "fwbw")
    out, _ = jax.jit(model.init_with_output, static_argnums=5)(
        jax.random.PRNGKey(0), static, frames, ff, fb, lp)
    for t in range(lp + 1):
        # Pixels whose flow chain leaves the image carry no evidence; compare the rest.
        inside = np.s_[:, t:, 2 * t:]
        np.testing.assert_array_equal(np.argmax(out["seq_logits"][:, t], -1)[inside],
                                      labels[:, t][inside])
    for t in range(lp, t_len):
        k = t_len - 1 - t
        inside = np.s_[:, :H - k, :W - 2 * k]
        np.testing.assert_array_equal(np.argmax(out["seq_logits_bwd"][:, t], -1)[inside],
                                      labels[:, t][inside])
    inside = np.s_[:, lp:H - lp, 2 * lp:W - 2 * lp]
    np.testing.assert_array_equal(np.argmax(out["logits"], -1)[inside], labels[:, lp][inside])
    # The gate trusts the exact flow away from the border the flow points across.
    assert float(np.min(out["r"][:, 1:lp + 1, 4:, 5:])) > 0.99
    assert float(np.min(out["r_bwd"][:, lp:-1, :-4, :-5])) > 0.99


# ----------------------------------------------------------------------- input checks
def test_bad_inputs_raise():
    static, frames, ff, fb = _inputs()
    model = GRFP(C, "forward")
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="label_pos"):
        model.init(key, static, frames, ff, fb, T)
    with pytest.raises(TypeError, match="label_pos"):
        model.init(key, static, frames, ff, fb, jnp.asarray(1))
    with pytest.raises(ValueError, match="flow_bwd"):
        model.init(key, static, frames, ff, fb[:, :-1], 2)
    with pytest.raises(ValueError, match="needs flow_fwd"):
        GRFP(C, "backward").init(key, static, frames, None, fb, 1)
    with pytest.raises(ValueError, match="mode"):
        GRFP(C, "sideways").init(key, static, frames, ff, fb, 1)
    with pytest.raises(ValueError, match="static_logits"):
        GRFP(C + 1, "forward").init(key, static, frames, ff, fb, 1)
    with pytest.raises(ValueError, match="kernel_size"):
        jax.eval_shape(lambda: GRFP(C, "forward", kernel_size=4).init(key, static, frames,
                                                                      ff, fb, 1))
    # 'forward' does not need flow_fwd.
    jax.eval_shape(lambda: GRFP(C, "forward").init(key, static, frames, None, fb, 1))


# ------------------------------------------------------------------ training smoke
def test_training_uses_temporal_context():
    """Static input clean on earlier frames, noisy on the labelled one: a few Adam steps
    lower the NLL at the labelled frame, below the static network's."""
    labels, frames, ff, fb = _moving_blob(v=(1, 1))
    rng = _rng(9)
    static = 4.0 * np.eye(C)[labels] - 2.0
    noisy = rng.random((B, H, W)) < 0.4
    wrong = (labels[:, -1] + rng.integers(1, C, (B, H, W))) % C
    static[:, -1] = np.where(noisy[..., None], 4.0 * np.eye(C)[wrong] - 2.0, static[:, -1])
    static = jnp.asarray(static, jnp.float32)
    lp = T - 1
    model = GRFP(C, "forward", kernel_size=3)
    # The forward model's parameters are one cell's, under 'forward' (a cheap eager init).
    first = [a[:, 0] for a in (jax.nn.softmax(static), jax.nn.softmax(static), frames, frames, fb)]
    params = {"forward": STGRUCell(C, kernel_size=3).init(jax.random.PRNGKey(0),
                                                          *first)["params"]}
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), static, frames, None,
                                               fb, lp))["params"]
    assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(jnp.shape, params)
    target = jnp.asarray(labels[:, lp])

    def nll(p):
        logp = model.apply({"params": p}, static, frames, None, fb, lp)["logits"]
        return -jnp.mean(jnp.take_along_axis(logp, target[..., None], -1))

    opt = optax.adam(3e-2)

    @jax.jit
    def step(p, s):
        loss, g = jax.value_and_grad(nll)(p)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    static_nll = float(-jnp.mean(jnp.take_along_axis(
        jax.nn.log_softmax(static[:, lp]), target[..., None], -1)))
    state = opt.init(params)
    losses = []
    for _ in range(26):
        params, state, loss = step(params, state)
        losses.append(float(loss))  # the loss before each update
    assert np.all(np.isfinite(losses))
    print("static NLL", static_nll, "GRFP NLL", losses[0], "->", losses[-1])
    assert losses[-1] < 0.7 * losses[0], losses
    assert losses[-1] < static_nll, (losses[-1], static_nll)
