"""Flow networks and providers: direction conventions, units, jit, gradients, config."""

import json
import os

import cv2
import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vsegjax import autolabel
from vsegjax.core import checkpoint
from vsegjax.data.synthetic import SyntheticConfig, generate_snippet
from vsegjax.models.flow_providers import (
    DatasetFlow,
    LearnedFlow,
    OpenCVFlow,
    farneback_params_for_size,
    make_flow_provider,
)
from vsegjax.models.flownet import FlowNetS, init_flownet
from vsegjax.models.flownet_checkpoint import load_flownet_variables
from vsegjax.ops import resize_flow, warp



DX, DY = 3.0, -2.0


def smooth_texture(height, width, seed=0, cell=6):
    """Upsampled noise in [0, 1], larger than the frame so it can be shifted."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(size=(height // cell + 4, width // cell + 4, 3)).astype(np.float32)
    big = cv2.resize(small, (small.shape[1] * cell, small.shape[0] * cell),
                     interpolation=cv2.INTER_CUBIC)
    return np.clip(big, 0.0, 1.0)


def translated_pair(height=64, width=96, dx=DX, dy=DY, seed=0):
    """frames [1, 2, H, W, 3] float: the content of frame 0 at p is at p + (dx, dy) in frame 1."""
    big = smooth_texture(height, width, seed)
    y0, x0 = 12, 12
    f0 = big[y0:y0 + height, x0:x0 + width]
    f1 = big[y0 - int(dy):y0 - int(dy) + height, x0 - int(dx):x0 - int(dx) + width]
    return np.stack([f0, f1])[None]


@pytest.fixture(scope="module")
def snippet():
    cfg = SyntheticConfig(height=64, width=128, num_frames=3, label_index=1, degrade_prob=0.0)
    return generate_snippet(cfg, "train", 0)


# --------------------------------------------------------------------------- OpenCV


@pytest.mark.parametrize("method", ["farneback", "dis"])
def test_opencv_direction_on_translation(method):
    frames = translated_pair()
    fwd, bwd = OpenCVFlow(method).flows(frames)
    assert fwd.shape == bwd.shape == (1, 1, 64, 96, 2) and fwd.dtype == np.float32
    med_f = np.median(fwd[0, 0].reshape(-1, 2), axis=0)
    med_b = np.median(bwd[0, 0].reshape(-1, 2), axis=0)
    np.testing.assert_allclose(med_f, [DX, DY], atol=0.5)
    np.testing.assert_allclose(med_b, [-DX, -DY], atol=0.5)
    # Backward warping with flow_fwd brings frame 1 onto frame 0's grid, and vice versa.
    inner = (slice(8, -8), slice(8, -8))
    f0, f1 = frames[0, 0], frames[0, 1]
    err_fwd = np.abs(np.asarray(warp(f1, fwd[0, 0])) - f0)[inner].mean()
    err_bwd = np.abs(np.asarray(warp(f0, bwd[0, 0])) - f1)[inner].mean()
    still = np.abs(f1 - f0)[inner].mean()
    assert err_fwd < 0.2 * still and err_bwd < 0.2 * still, (err_fwd, err_bwd, still)
    # uint8 input gives the same flow as float input in [0, 1].
    fwd8, _ = OpenCVFlow(method).flows(np.round(frames * 255).astype(np.uint8), need="fwd")
    np.testing.assert_allclose(fwd8, fwd, atol=1e-4)


@pytest.mark.parametrize("method", ["farneback", "dis"])
def test_opencv_beats_zero_flow_on_synthetic(method, snippet):
    fwd, bwd = OpenCVFlow(method).flows(snippet["frames"][None])
    for name, pred, gt in (("fwd", fwd[0], snippet["flow_fwd"]), ("bwd", bwd[0], snippet["flow_bwd"])):
        epe = np.linalg.norm(pred - gt, axis=-1).mean()
        zero = np.linalg.norm(gt, axis=-1).mean()
        print(f"{method} {name}: EPE {epe:.3f} px vs zero-flow EPE {zero:.3f} px")
        assert epe < zero, (method, name, epe, zero)


def test_opencv_pure_callback_in_jit(snippet):
    provider = OpenCVFlow("farneback")
    frames = snippet["frames"][None].astype(np.float32) / 255.0
    host_fwd, host_bwd = provider.flows(frames)
    jit_fwd, jit_bwd = jax.jit(provider.as_jax_fn())(frames)
    np.testing.assert_allclose(np.asarray(jit_fwd), host_fwd, atol=1e-5)
    np.testing.assert_allclose(np.asarray(jit_bwd), host_bwd, atol=1e-5)
    # flows() on a tracer takes the callback path; one direction only.
    fwd, bwd = jax.jit(lambda f: provider.flows(f, need="bwd"))(frames)
    assert fwd is None
    np.testing.assert_allclose(np.asarray(bwd), host_bwd, atol=1e-5)
    # A jitted eval step can mix it with array code, and vmap over a leading axis works.
    warped = jax.jit(lambda f: warp(f[:, 0], provider.flows(f, need="fwd")[0][:, 0]))(frames)
    assert warped.shape == (1, 64, 128, 3)
    vm = jax.jit(jax.vmap(lambda f: provider.as_jax_fn("fwd")(f)[0]))(frames[None])
    np.testing.assert_allclose(np.asarray(vm[0]), host_fwd, atol=1e-5)


def test_opencv_flow_inside_a_step_is_refused_on_several_processes(monkeypatch, snippet):
    provider = OpenCVFlow("farneback")
    monkeypatch.setattr(jax, "process_count", lambda: 4)
    with pytest.raises(ValueError, match="farneback flow inside a jitted step on 4 processes"):
        jax.jit(provider.as_jax_fn())(snippet["frames"][None].astype(np.float32) / 255.0)


def test_opencv_parameters():
    p = farneback_params_for_size(24, 40, levels=3, winsize=15, iterations=3)
    assert p["levels"] == 1 and p["winsize"] == 5 and p["iterations"] == 3
    assert farneback_params_for_size(256, 512)["levels"] == 3
    with pytest.raises(ValueError, match="method"):
        OpenCVFlow("lucas_kanade")
    with pytest.raises(ValueError, match="winsz"):
        OpenCVFlow("farneback", winsz=3)
    with pytest.raises(ValueError, match="preset"):
        OpenCVFlow("dis", preset="slow")
    fwd, _ = OpenCVFlow("dis", preset="ultrafast", finest_scale=1).flows(translated_pair())
    assert np.isfinite(fwd).all()
    with pytest.raises(ValueError, match=r"\[B, T, H, W, 3\]"):
        OpenCVFlow().flows(np.zeros((1, 1, 8, 8, 3), np.uint8))


# --------------------------------------------------------------------------- dataset


def test_dataset_flow(snippet):
    batch = {k: snippet[k][None] for k in ("frames", "flow_fwd", "flow_bwd")}
    fwd, bwd = DatasetFlow().from_batch(batch)
    assert fwd is batch["flow_fwd"] and bwd is batch["flow_bwd"]
    fwd, bwd = DatasetFlow()(batch, need="bwd")
    assert fwd is None and bwd is batch["flow_bwd"]
    with pytest.raises(ValueError, match="'flow_fwd'.*shape"):
        DatasetFlow().from_batch({**batch, "flow_fwd": batch["flow_fwd"][:, :1]})
    with pytest.raises(ValueError, match="'flow_bwd'.*synthetic_video"):
        DatasetFlow().from_batch({"frames": batch["frames"], "flow_fwd": batch["flow_fwd"]})
    # Only the needed direction must be present.
    assert DatasetFlow().from_batch({"flow_fwd": batch["flow_fwd"]}, need="fwd")[1] is None
    with pytest.raises(TypeError, match="from_batch"):
        DatasetFlow().flows(batch["frames"])


# --------------------------------------------------------------------------- FlowNetS

SMALL = dict(width=0.125, num_levels=5, max_displacement=3)


@pytest.fixture(scope="module")
def small_net():
    """(module, variables, jitted apply); tests reuse input shapes so the compile is shared."""
    module = FlowNetS(occlusion=True, **SMALL)
    return module, init_flownet(module, jax.random.key(0)), jax.jit(module.apply)


def variables_without_occlusion(variables):
    dec = {k: v for k, v in variables["params"]["decoder"].items() if not k.startswith("occ")}
    return {"params": {**variables["params"], "decoder": dec}}


@pytest.mark.slow
def test_flownet_shapes_and_jit(small_net):
    module, variables, apply = small_net
    x1 = jax.random.uniform(jax.random.key(1), (2, 64, 128, 3))
    x2 = jnp.roll(x1, 2, axis=2)
    out = apply(variables, x1, x2)
    assert out["flow"].shape == (2, 64, 128, 2) and out["flow"].dtype == jnp.float32
    sizes = [(64 // 2 ** k, 128 // 2 ** k) for k in range(2, 6)]  # strides 4..32
    assert [p.shape for p in out["pyramid"]] == [(2, h, w, 2) for h, w in sizes]
    assert [o.shape for o in out["occlusion"]] == [(2, h, w) for h, w in sizes]
    assert [o.shape for o in out["occlusion_logits"]] == [(2, h, w) for h, w in sizes]
    assert out["occlusion_full"].shape == (2, 64, 128)
    occ = np.concatenate([np.ravel(o) for o in out["occlusion"]])
    assert np.all((occ > 0) & (occ < 1))
    for leaf in jax.tree.leaves(out):
        assert np.all(np.isfinite(leaf))
    # The full-resolution flow is the finest pyramid level resized as a flow.
    np.testing.assert_allclose(out["flow"], resize_flow(out["pyramid"][0], 64, 128),
                               rtol=1e-4, atol=1e-5)
    # Odd sizes work (ceil at every stride); no occlusion outputs by default.
    plain = FlowNetS(**SMALL)
    out = jax.jit(plain.apply)(variables_without_occlusion(variables), x1[:1, :45, :77],
                               x2[:1, :45, :77])
    assert out["flow"].shape == (1, 45, 77, 2) and "occlusion" not in out
    assert out["pyramid"][0].shape == (1, 12, 20, 2)


def test_flownet_pixel_units(small_net):
    """A constant prediction c at the finest level is c * flow_scale full-res pixels."""
    _, variables, apply = small_net
    params = dict(variables["params"])
    head = dict(params["decoder"]["predict_flow0"])
    head["kernel"] = jnp.zeros_like(head["kernel"])
    head["bias"] = jnp.asarray([0.1, -0.05])
    params["decoder"] = {**params["decoder"], "predict_flow0": head}
    x = jax.random.uniform(jax.random.key(2), (2, 64, 128, 3))
    out = apply({"params": params}, x, x)
    np.testing.assert_allclose(out["flow"], np.broadcast_to([2.0, -1.0], (2, 64, 128, 2)),
                               atol=1e-5)
    # Stride 4: a 2 px x-motion at full resolution is 0.5 px on the 16x32 grid.
    np.testing.assert_allclose(out["pyramid"][0], np.broadcast_to([0.5, -0.25], (2, 16, 32, 2)),
                               atol=1e-6)


@pytest.mark.slow
def test_flownet_residual_starts_at_zero_and_adds_levels():
    """residual=True: an untrained net predicts the zero flow, and each finer level adds
    its correction to the upsampled coarser flow."""
    module = FlowNetS(residual=True, **SMALL)
    variables = init_flownet(module, jax.random.key(0))
    x1 = jax.random.uniform(jax.random.key(1), (1, 64, 128, 3))
    apply = jax.jit(module.apply)
    out = apply(variables, x1, jnp.roll(x1, 3, axis=2))
    np.testing.assert_array_equal(out["flow"], 0.0)
    # A bias on the coarsest prediction alone reaches every finer level unchanged.
    params = jax.tree.map(lambda x: x, dict(variables["params"]))
    dec = dict(params["decoder"])
    coarsest = max(int(k[len("predict_flow"):]) for k in dec if k.startswith("predict_flow"))
    dec[f"predict_flow{coarsest}"] = {**dec[f"predict_flow{coarsest}"],
                                      "bias": jnp.asarray([0.1, -0.05])}
    out = apply({"params": {**params, "decoder": dec}}, x1, x1)
    np.testing.assert_allclose(out["flow"], np.broadcast_to([2.0, -1.0], (1, 64, 128, 2)),
                               atol=1e-5)


@pytest.mark.slow
def test_flownet_overfits_a_translation():
    module = FlowNetS(width=0.125, num_levels=4, max_displacement=2)
    params = init_flownet(module, jax.random.key(0))["params"]
    frames = jnp.asarray(translated_pair(64, 128))
    x1, x2 = frames[:, 0], frames[:, 1]
    gt = jnp.broadcast_to(jnp.asarray([DX, DY]), (1, 64, 128, 2))
    opt = optax.adam(1e-3)

    def epe(p):
        out = module.apply({"params": p}, x1, x2)
        return jnp.mean(jnp.linalg.norm(out["flow"] - gt, axis=-1))

    @jax.jit
    def train(p):
        def step(carry, _):
            p, s = carry
            value, g = jax.value_and_grad(epe)(p)
            updates, s = opt.update(g, s, p)
            return (optax.apply_updates(p, updates), s), value
        (p, _), values = jax.lax.scan(step, (p, opt.init(p)), None, length=80)
        return values[0], epe(p)

    first, final = map(float, train(params))
    print(f"FlowNetS overfit EPE: {first:.3f} -> {final:.3f} px")
    assert final < 0.5 * first


def test_flownet_config_errors():
    x = jnp.zeros((1, 32, 32, 3))
    for kwargs, field in (({"num_levels": 9}, "num_levels"), ({"corr_level": 7}, "corr_level"),
                          ({"finest_level": 4}, "finest_level"), ({"width": 0.0}, "width")):
        with pytest.raises(ValueError, match=field):
            jax.eval_shape(FlowNetS(**kwargs).init, jax.random.key(0), x, x)
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        jax.eval_shape(FlowNetS().init, jax.random.key(0), x, x[:, :16])


# --------------------------------------------------------------------------- LearnedFlow


@pytest.mark.slow
def test_learned_flow_provider(small_net):
    module, variables, apply = small_net
    frames = jax.random.uniform(jax.random.key(4), (2, 3, 64, 128, 3))
    provider = LearnedFlow(module, variables)
    fwd, bwd = jax.jit(provider.flows)(frames)
    assert fwd.shape == bwd.shape == (2, 2, 64, 128, 2)
    # fwd[b, t] is the network on (frame t, frame t+1), bwd[b, t] on (frame t+1, frame t).
    pair = apply(variables, frames[1, 1:3], frames[1, 2:0:-1])["flow"]
    np.testing.assert_allclose(fwd[1, 1], pair[0], atol=1e-4)
    np.testing.assert_allclose(bwd[1, 1], pair[1], atol=1e-4)
    pair = apply(variables, frames[0, 0:2], frames[0, 1::-1])["flow"]
    np.testing.assert_allclose(fwd[0, 0], pair[0], atol=1e-4)
    np.testing.assert_allclose(bwd[0, 0], pair[1], atol=1e-4)
    none, only_bwd = jax.jit(lambda f: provider.flows(f, need="bwd"))(frames[:1])
    assert none is None
    np.testing.assert_allclose(only_bwd, bwd[:1], atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("trainable", [False, True])
def test_learned_flow_gradients(small_net, trainable):
    """Frozen: stop_gradient gives exactly zero; trainable: finite, non-zero gradients."""
    module, variables, _ = small_net
    frames = jax.random.uniform(jax.random.key(5), (1, 2, 64, 128, 3))
    provider = LearnedFlow(module, variables, trainable=trainable)

    def loss(v):
        fwd, bwd = provider.flows(frames, variables=v)
        return jnp.mean(fwd ** 2) + jnp.mean(bwd ** 2)
    grads = jax.jit(jax.grad(loss))(variables)
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(g)) for g in leaves)
    total = sum(float(jnp.sum(jnp.abs(g))) for g in leaves)
    assert (total > 0) == trainable, total


# --------------------------------------------------------------------------- config


def flow_config(**fields):
    """A config's ``flow`` block: what a provider receives."""
    return ml_collections.ConfigDict(fields)


def test_make_flow_provider(tmp_path, small_net):
    assert isinstance(make_flow_provider(flow_config(source="dataset")), DatasetFlow)
    p = make_flow_provider(flow_config(source="farneback", params={"winsize": 9}))
    assert isinstance(p, OpenCVFlow) and p.method == "farneback" and p.params["winsize"] == 9
    p = make_flow_provider(flow_config(source="dis", dis_preset="fast"))
    assert p.method == "dis" and p.preset == "fast"
    whole = ml_collections.ConfigDict({"flow": flow_config(source="dis")})
    with pytest.raises(ValueError, match="the flow block"):  # a provider gets its block alone
        make_flow_provider(whole)
    for fields, name in (({"source": "raft"}, "flow.source"),
                         ({"source": "dis", "dis_preset": "slow"}, "flow.dis_preset"),
                         ({"source": "farneback", "params": {"wnsize": 3}}, "flow.params"),
                         ({"source": "flownet", "width": -1.0}, "flow.width"),
                         ({"source": "flownet", "trainable": "yes"}, "flow.trainable"),
                         ({"source": "flownet", "num_levels": 9}, "flow.num_levels")):
        with pytest.raises(ValueError, match=name):
            make_flow_provider(flow_config(**fields))

    # flownet from a msgpack checkpoint; no checkpoint = fresh parameters.
    module, variables, _ = small_net
    plain = variables_without_occlusion(variables)
    path = tmp_path / "flownet.msgpack"
    path.write_bytes(flax.serialization.to_bytes({"params": plain["params"], "step": 3}))
    cfg = flow_config(source="flownet", checkpoint=str(path), trainable=True, **SMALL)
    p = make_flow_provider(cfg)
    assert isinstance(p, LearnedFlow) and p.trainable
    for a, b in zip(jax.tree.leaves(p.variables), jax.tree.leaves(plain)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="flow.checkpoint.*shape"):
        make_flow_provider(flow_config(source="flownet", checkpoint=str(path), width=0.25,
                                       num_levels=5, max_displacement=3))
    with pytest.raises(ValueError, match="flow.checkpoint.*does not exist"):
        make_flow_provider(flow_config(source="flownet", checkpoint=str(tmp_path / "nope")))
    fresh = make_flow_provider(flow_config(source="flownet", width=0.125, num_levels=3))
    assert isinstance(fresh, LearnedFlow) and not fresh.trainable


def test_load_flownet_from_orbax_workdir(tmp_path, small_net):
    """A run's workdir: checkpoints/<step>/state holding a train state with params."""
    import orbax.checkpoint as ocp
    _, variables, _ = small_net
    module = FlowNetS(occlusion=True, **SMALL)
    mngr = ocp.CheckpointManager(os.fspath(tmp_path / "checkpoints"),
                                 item_handlers={"state": ocp.StandardCheckpointHandler()},
                                 options=ocp.CheckpointManagerOptions(create=True))
    state = {"params": variables["params"], "step": np.int32(7)}
    mngr.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
    mngr.wait_until_finished()
    mngr.close()
    loaded = load_flownet_variables(os.fspath(tmp_path), module)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(a, b)


def _efc_run(folder, variables, **efc):
    """A stand-in for an EFC run folder: its config.json and an orbax train state with the
    FlowNetS branch under params['flow'] (where EFCModel keeps it)."""

    import orbax.checkpoint as ocp
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"task": "efc", "efc": efc}))
    mngr = ocp.CheckpointManager(os.fspath(folder / "checkpoints"),
                                 item_handlers={"state": ocp.StandardCheckpointHandler()},
                                 options=ocp.CheckpointManagerOptions(create=True))
    state = {"params": {"flow": variables["params"], "static": {"w": np.ones(3, np.float32)}},
             "step": np.int32(4)}
    mngr.save(4, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
    mngr.wait_until_finished()
    mngr.close()


@pytest.mark.slow
def test_a_residual_flownet_run_is_loaded_as_residual(tmp_path):
    """Bug: EFC's residual FlowNetS branch was loaded by the GRFP flow provider as a
    non-residual net (the same parameter shapes), so its flows were silently wrong. The
    architecture now comes from the run's config.json; a contradicting field is named."""
    module = FlowNetS(occlusion=True, residual=True, **SMALL)
    variables = init_flownet(module, jax.random.key(3))
    # Non-zero prediction convs, so residual and plain decoding differ.
    variables = jax.tree.map(lambda x: x + 0.05 * jnp.sin(jnp.arange(x.size).reshape(x.shape)),
                             variables)
    run = tmp_path / "flow_pretrain"
    _efc_run(run, variables, flow_branch="separate", flow=dict(SMALL, residual=True))
    x1 = jax.random.uniform(jax.random.key(1), (1, 64, 96, 3))
    x2 = jnp.roll(x1, 3, axis=2)
    want = module.apply(variables, x1, x2)["flow"]
    plain = FlowNetS(occlusion=True, **SMALL).apply(variables, x1, x2)["flow"]
    assert float(jnp.max(jnp.abs(want - plain))) > 0.1  # the bug's error is visible
    for where in (run, run / "checkpoints" / "4"):
        p = make_flow_provider(flow_config(source="flownet", checkpoint=str(where)))
        assert p.module.residual and p.module.occlusion and p.module.width == SMALL["width"]
        got = p.module.apply(p.variables, x1, x2)["flow"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    p = autolabel.flow_source(str(run))  # autolabel --flow=RUN reads it the same way
    np.testing.assert_allclose(p.module.apply(p.variables, x1, x2)["flow"], want,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"flow.residual=False.*residual=True"):
        make_flow_provider(flow_config(source="flownet", checkpoint=str(run), residual=False))
    with pytest.raises(ValueError, match=r"flow.num_levels=6.*num_levels=5"):
        make_flow_provider(flow_config(source="flownet", checkpoint=str(run), num_levels=6))
    shared = tmp_path / "efc_shared"
    _efc_run(shared, variables, flow_branch="shared")
    with pytest.raises(ValueError, match="shared decoder"):
        make_flow_provider(flow_config(source="flownet", checkpoint=str(shared)))


def test_a_flownet_checkpoint_is_checked_against_the_config_before_reading(
        tmp_path, forbid_reads):
    small = FlowNetS(width=0.25, num_levels=3, max_displacement=2)
    params = init_flownet(small, jax.random.key(0))["params"]
    saved = checkpoint.Checkpointer(str(tmp_path / "run" / "checkpoints"), async_save=False)
    saved.save(3, {"params": {"flow": params}, "step": jnp.int32(3)})
    saved.close()
    wider = FlowNetS(width=0.5, num_levels=3, max_displacement=2)
    forbid_reads()
    with pytest.raises(ValueError, match=r"flow.checkpoint: .*run for FlowNetS\(width=0.5, "
                                         r"num_levels=3\): parameter params/flow/\S+ has shape "
                                         r"\(.*\) in the checkpoint, this config expects "
                                         r"\(.*\); check flow.width"):
        load_flownet_variables(str(tmp_path / "run"), wider)
