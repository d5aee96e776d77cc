"""torchvision ResNet state dicts -> vsegjax's Flax ResNet (vsegjax.models.convert)."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vsegjax.models import convert
from vsegjax.models.resnet import DEPTHS, STAGE_WIDTHS, ResNet
from vsegjax.models.segmenter import default_config, make_segmenter


def torch_names(depth: int) -> dict[str, tuple[int, ...]]:
    """torchvision's ResNet state-dict keys and shapes (without fc), written out from
    torchvision's resnet.py layout (v1.5: the stride in the 3x3 conv)."""
    kind, counts = DEPTHS[depth]
    exp = 1 if kind == "basic" else 4
    names = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix, c):
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            names[f"{prefix}.{leaf}"] = (c,)
        names[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", 64)
    cin = 64
    for i, (n, w) in enumerate(zip(counts, STAGE_WIDTHS), start=1):
        for b in range(n):
            p = f"layer{i}.{b}"
            if kind == "basic":
                convs = [(w, cin, 3, 3), (w, w, 3, 3)]
            else:
                convs = [(w, cin, 1, 1), (w, w, 3, 3), (w * exp, w, 1, 1)]
            for k, shape in enumerate(convs, start=1):
                names[f"{p}.conv{k}.weight"] = shape
                bn(f"{p}.bn{k}", shape[0])
            if b == 0 and (i > 1 or cin != w * exp):
                names[f"{p}.downsample.0.weight"] = (w * exp, cin, 1, 1)
                bn(f"{p}.downsample.1", w * exp)
            cin = w * exp
    names["fc.weight"], names["fc.bias"] = (1000, cin), (1000,)
    return names


def random_state(depth: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for k, shape in torch_names(depth).items():
        x = rng.normal(size=shape).astype(np.float32) * 0.1
        out[k] = np.abs(x) + 0.5 if k.endswith("running_var") else x
    return out


@pytest.mark.parametrize("depth", [18, 50])
def test_every_weight_lands_where_its_name_says(depth):
    state = random_state(depth)
    assert convert.infer_depth(state) == depth
    v = convert.convert_resnet(state)
    p, s = v["params"], v["batch_stats"]
    np.testing.assert_array_equal(p["encoder"]["stem"]["conv"]["kernel"],
                                  state["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(s["encoder"]["stem"]["bn"]["var"], state["bn1.running_var"])
    np.testing.assert_array_equal(p["encoder"]["layer2"]["block1"]["bn2"]["scale"],
                                  state["layer2.1.bn2.weight"])
    np.testing.assert_array_equal(p["layer4"]["block0"]["downsample_conv"]["kernel"],
                                  state["layer4.0.downsample.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(s["layer4"]["block0"]["downsample_bn"]["mean"],
                                  state["layer4.0.downsample.1.running_mean"])
    # Every variable of the Flax ResNet is filled, with its shape.
    template = jax.eval_shape(lambda: ResNet(depth=depth).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    assert jax.tree.map(np.shape, dict(template)) == jax.tree.map(np.shape, v)


def test_a_state_dict_that_does_not_fit_is_named():
    state = random_state(18)
    with pytest.raises(ValueError, match=r"no place for \['layer5.0.conv1.weight'\]"):
        convert.convert_resnet(dict(state, **{"layer5.0.conv1.weight": np.zeros(1)}), 18)
    del state["layer3.1.bn2.running_var"]
    with pytest.raises(ValueError, match="lacks 1 ResNet-18 variables"):
        convert.convert_resnet(state, 18)
    with pytest.raises(ValueError, match="layer1.0.conv1.weight: shape"):
        convert.convert_resnet(random_state(18), 50)  # basic blocks where bottlenecks go
    with pytest.raises(ValueError, match="lacks 80 ResNet-34 variables"):
        convert.convert_resnet(random_state(18), 34)  # too few blocks
    with pytest.raises(ValueError, match="match none of"):
        convert.infer_depth({"layer1.0.conv1.weight": np.zeros(1)})


@pytest.mark.slow
def test_pretrained_replaces_the_backbone_and_nothing_else():
    cfg = default_config()
    cfg.update(dict(backbone="resnet18", head="simple", num_classes=5))
    model = make_segmenter(cfg)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    wrapped = {c: {"static": t} for c, t in variables.items()}  # as inside a task's model
    backbone = convert.convert_resnet(random_state(18))
    out = convert.apply_pretrained(wrapped, backbone)
    for a, b in zip(jax.tree.leaves(out["params"]["static"]["backbone"]),
                    jax.tree.leaves(backbone["params"])):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(out["params"]["static"]["head"]),
                    jax.tree.leaves(variables["params"]["head"])):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="another depth"):
        convert.apply_pretrained(wrapped, convert.convert_resnet(random_state(50)))
    small = make_segmenter(dict(backbone="small", head="simple", num_classes=5, width=8))
    with pytest.raises(ValueError, match="no ResNet backbone"):
        convert.apply_pretrained(small.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))),
                                 backbone)


def torch_resnet(torch, depth: int):
    """torchvision's ResNet v1.5 (resnet.py: BasicBlock, Bottleneck, _make_layer) written
    out, for machines where torchvision's wheel cannot load (it links CUDA's runtime)."""
    nn = torch.nn
    kind, counts = DEPTHS[depth]

    class Block(nn.Module):
        def __init__(self, cin, w, stride):
            super().__init__()
            out = w if kind == "basic" else 4 * w
            if kind == "basic":
                self.conv1 = nn.Conv2d(cin, w, 3, stride, 1, bias=False)
                self.conv2 = nn.Conv2d(w, w, 3, 1, 1, bias=False)
                self.convs = 2
            else:
                self.conv1 = nn.Conv2d(cin, w, 1, bias=False)
                self.conv2 = nn.Conv2d(w, w, 3, stride, 1, bias=False)
                self.conv3 = nn.Conv2d(w, out, 1, bias=False)
                self.bn3 = nn.BatchNorm2d(out)
                self.convs = 3
            self.bn1, self.bn2 = nn.BatchNorm2d(w), nn.BatchNorm2d(w)
            self.relu = nn.ReLU()
            self.downsample = None
            if stride != 1 or cin != out:
                self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False),
                                                nn.BatchNorm2d(out))

        def forward(self, x):
            y = x
            for k in range(1, self.convs + 1):
                y = getattr(self, f"bn{k}")(getattr(self, f"conv{k}")(y))
                if k < self.convs:
                    y = self.relu(y)
            return self.relu(y + (x if self.downsample is None else self.downsample(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1, self.relu = nn.BatchNorm2d(64), nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin = 64
            for i, (n, w) in enumerate(zip(counts, STAGE_WIDTHS), start=1):
                blocks = []
                for b in range(n):
                    blocks.append(Block(cin, w, 2 if b == 0 and i > 1 else 1))
                    cin = w if kind == "basic" else 4 * w
                setattr(self, f"layer{i}", nn.Sequential(*blocks))
            self.fc = nn.Linear(cin, 1000)

    return Net()


@pytest.mark.parametrize("depth", [18, 50])
def test_features_equal_torchvisions_resnet(depth, tmp_path):
    """The converted weights give torchvision's layer1..layer4 features (eval mode).
    Needs torch (skipped without it); uses torchvision's ResNet where it imports, else
    ``torch_resnet``."""
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch)")
    try:
        models = importlib.import_module("torchvision.models")
        net = getattr(models, f"resnet{depth}")(weights=None)
    except Exception:  # noqa: BLE001 - e.g. a torchvision wheel built for CUDA torch
        net = torch_resnet(torch, depth)  # the same modules, names and forward
    with torch.no_grad():  # random BN statistics, so eval mode's normalisation matters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1.0, 0.1)
                m.bias.normal_(0.0, 0.1)
    net.eval()
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(net.state_dict(), path)
    variables = convert.convert_resnet(convert.read_state_dict(str(path)))
    x = np.random.default_rng(1).normal(size=(2, 3, 96, 128)).astype(np.float32)
    with torch.no_grad():
        t = torch.from_numpy(x)
        t = net.maxpool(net.relu(net.bn1(net.conv1(t))))
        want = {}
        for name in ("layer1", "layer2", "layer3", "layer4"):
            t = getattr(net, name)(t)
            want[name] = t.numpy().transpose(0, 2, 3, 1)
    got = ResNet(depth=depth).apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
    for name, w in want.items():
        err = np.max(np.abs(np.asarray(got[name]) - w)) / np.max(np.abs(w))
        assert err < 1e-4, (name, err)
    # The command writes the same variables as an orbax checkpoint.
    convert.main(["--input", str(path), "--out", str(tmp_path / "ckpt")])
    for a, b in zip(jax.tree.leaves(convert.load_pretrained(str(tmp_path / "ckpt"))),
                    jax.tree.leaves(variables)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_run_with_model_pretrained_starts_from_the_checkpoint(tmp_path):
    """``model.pretrained`` (an orbax checkpoint as the command writes) sets the
    backbone of a fresh run: with the model frozen its parameters stay those."""
    import orbax.checkpoint as ocp

    from configs import static_synthetic
    from vsegjax.data import synthetic_tfds
    from vsegjax.core import checkpoint
    from vsegjax import experiments
    data_dir = str(tmp_path / "tfds")
    synthetic_tfds.build(data_dir, "tiny", num_workers=1)
    backbone = convert.convert_resnet(random_state(18))
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(str(tmp_path / "resnet18"), backbone)
    ckpt.wait_until_finished()
    c = static_synthetic.get_config()
    c.data.data_dir, c.data.config = data_dir, "tiny"
    c.model.update(dict(backbone="resnet18", pretrained=str(tmp_path / "resnet18")))
    c.input.batch_size = 8
    c.input.augment.resize = c.input.augment.crop_size = (48, 64)
    # A zero learning rate is refused by validation; freezing the model keeps every weight.
    c.optimizer.update(dict(frozen=("static",), weight_decay=0.0))
    c.train.update(dict(num_steps=1, eval_every=0, async_checkpoints=False))
    c.eval.update(dict(num_snippets=1, num_panels=0))
    experiments.run(c, str(tmp_path / "run"))
    params = checkpoint.load_state_tree(str(tmp_path / "run" / "static"))["params"]
    for a, b in zip(jax.tree.leaves(params["static"]["backbone"]),
                    jax.tree.leaves(backbone["params"])):
        np.testing.assert_array_equal(a, b)
