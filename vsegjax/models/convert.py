"""torchvision ResNet weights -> vsegjax's Flax ResNet, and ``model.pretrained``.

    python -m vsegjax.models.convert --input=resnet50.pth --out=pretrained/resnet50

reads a torchvision ResNet-18/34/50/101 state dict (a ``.pth`` / ``.pt`` saved with
``torch.save``, read with ``torch.load(weights_only=True)``, or a ``.safetensors`` file)
and writes an orbax checkpoint of the backbone's ``{"params", "batch_stats"}`` in the
layout of ``vsegjax.models.resnet.ResNet``. ``model.pretrained=PATH`` (the checkpoint, or
the ``.pth`` / ``.safetensors`` file itself) starts every ResNet backbone of a model from
it (the trainer does so on a fresh start, before ``train.init_from``).

The mapping is by name: torchvision's ``conv1``/``bn1`` are the stem's ``conv``/``bn``,
``layer{1..3}.{b}.*`` sit under ``encoder/layer{1..3}/block{b}``, ``layer4.{b}.*`` under
``layer4/block{b}``, ``downsample.0``/``.1`` are ``downsample_conv``/``downsample_bn``;
conv weights go OIHW -> HWIO, BN ``weight``/``bias``/``running_mean``/``running_var`` to
``scale``/``bias`` and ``batch_stats`` ``mean``/``var``. ``fc.*`` and
``num_batches_tracked`` are dropped. Nothing here downloads weights (see the README).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from vsegjax.models.resnet import DEPTHS, ResNet

_DROPPED = re.compile(r"^fc\.|\.num_batches_tracked$|^num_batches_tracked$")
_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """A torch state dict as numpy arrays, from ``.pth``/``.pt`` or ``.safetensors``."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such weights file")
    if path.endswith(".safetensors"):
        try:
            from safetensors.numpy import load_file
        except ImportError as e:
            raise ImportError(f"{path}: reading .safetensors needs the safetensors package "
                              f"(pip install safetensors)") from e
        return dict(load_file(path))
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"{path}: reading a .pth needs PyTorch (pip install torch), or "
                          f"convert it to .safetensors where torch is installed") from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v.detach().cpu().numpy() for k, v in state.items()
            if hasattr(v, "detach")}


def infer_depth(state: Mapping[str, np.ndarray]) -> int:
    """18/34/50/101 from the blocks per stage and whether blocks have a ``conv3``."""
    counts = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")})
                   for i in range(1, 5))
    kind = "bottleneck" if any(".conv3." in k for k in state) else "basic"
    for depth, (k, c) in DEPTHS.items():
        if (k, c) == (kind, counts):
            return depth
    raise ValueError(f"not a torchvision ResNet state dict: {kind} blocks {counts} per stage "
                     f"match none of {sorted(DEPTHS)}")


def _target(key: str) -> tuple[str, tuple[str, ...], str]:
    """(collection, path in ResNet's variables, torch suffix) of a state-dict key."""
    parts = key.split(".")
    if parts[0] in ("conv1", "bn1"):
        module, rest = ("encoder", "stem", "conv" if parts[0] == "conv1" else "bn"), parts[1:]
    elif re.fullmatch(r"layer[1-4]", parts[0]):
        top = ("layer4",) if parts[0] == "layer4" else ("encoder", parts[0])
        name = parts[2]
        if name == "downsample":
            name, rest = ("downsample_conv" if parts[3] == "0" else "downsample_bn"), parts[4:]
        else:
            rest = parts[3:]
        module = top + (f"block{parts[1]}", name)
    else:
        raise KeyError(key)
    (suffix,) = rest
    if module[-1].startswith("conv") or module[-1] == "downsample_conv":
        if suffix != "weight":
            raise KeyError(key)
        return "params", module + ("kernel",), suffix
    collection, leaf = _BN[suffix]
    return collection, module + (leaf,), suffix


def convert_resnet(state: Mapping[str, np.ndarray], depth: int | None = None) -> dict:
    """``{"params", "batch_stats"}`` of ``ResNet(depth)`` from a torchvision state dict;
    every variable must be filled with its shape, and no weight may be left over."""
    depth = infer_depth(state) if depth is None else depth
    template = jax.eval_shape(lambda: ResNet(depth=depth).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))
    want = {(c,) + tuple(str(getattr(k, "key", k)) for k in path): leaf.shape
            for c in ("params", "batch_stats")
            for path, leaf in jax.tree_util.tree_flatten_with_path(template[c])[0]}
    flat, unknown = {}, []
    for key, value in state.items():
        if _DROPPED.search(key):
            continue
        try:
            collection, path, _ = _target(key)
        except (KeyError, ValueError):
            unknown.append(key)
            continue
        value = np.asarray(value, np.float32)
        if path[-1] == "kernel":
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        name = (collection,) + path
        if name not in want:
            unknown.append(key)
        elif value.shape != want[name]:
            raise ValueError(f"{key}: shape {value.shape} after conversion, ResNet-{depth} "
                             f"needs {want[name]} at {'/'.join(name)}")
        else:
            flat[name] = value
    if unknown:
        raise ValueError(f"not a torchvision ResNet-{depth} state dict: no place for "
                         f"{sorted(unknown)[:8]}{' ...' if len(unknown) > 8 else ''}")
    missing = sorted("/".join(k) for k in want if k not in flat)
    if missing:
        raise ValueError(f"the state dict lacks {len(missing)} ResNet-{depth} variables, "
                         f"e.g. {missing[:4]}")
    return traverse_util.unflatten_dict(flat)


def load_pretrained(path: str) -> dict:
    """Backbone ``{"params", "batch_stats"}``: an orbax checkpoint written by this
    module's command, or a ``.pth`` / ``.safetensors`` file converted on the fly."""
    path = os.path.expanduser(str(path))
    if os.path.isdir(path):
        return ocp.StandardCheckpointer().restore(os.path.abspath(path))
    return convert_resnet(read_state_dict(path))


def _backbones(params: Mapping, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths of the ResNet backbones: subtrees of ``encoder`` (with the stem) and
    ``layer4`` (of blocks), as ``ResNet`` names them (the small net has no ``stem``)."""
    for key, value in params.items():
        if isinstance(value, Mapping):
            if ({"encoder", "layer4"} <= set(value) and "stem" in value["encoder"]
                    and "block0" in value["layer4"]):
                yield prefix + (key,)
            else:
                yield from _backbones(value, prefix + (key,))


def apply_pretrained(variables: Mapping[str, Any], pretrained: Mapping[str, Any],
                     where: str = "model.pretrained") -> dict:
    """``variables`` with every ResNet backbone's parameters and BN statistics replaced
    by ``pretrained``'s (shapes checked); an error if the model has no ResNet."""
    paths = list(_backbones(variables["params"]))
    if not paths:
        raise ValueError(f"{where}: the model has no ResNet backbone to start from it "
                         f"(model.backbone must be resnet18/34/50/101)")
    out = jax.tree.map(lambda x: x, dict(variables))  # new nested dicts, same leaves
    for path in paths:
        for collection in ("params", "batch_stats"):
            node = out[collection]
            for key in path[:-1]:
                node = node[key]
            old, new = node[path[-1]], pretrained[collection]
            shapes = jax.tree.map(np.shape, old), jax.tree.map(np.shape, new)
            if shapes[0] != shapes[1]:
                raise ValueError(f"{where}: a ResNet of another depth than the model's "
                                 f"backbone at {'/'.join(path)}")
            node[path[-1]] = jax.tree.map(lambda o, n: np.asarray(n, np.dtype(o.dtype)),
                                          old, new)
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m vsegjax.models.convert",
                                     description="torchvision ResNet -> orbax checkpoint")
    parser.add_argument("--input", required=True, help=".pth / .pt / .safetensors")
    parser.add_argument("--out", required=True, help="checkpoint folder to create")
    args = parser.parse_args(argv)
    out = os.path.abspath(os.path.expanduser(args.out))
    if os.path.exists(out):
        raise SystemExit(f"--out={args.out} exists; pick a new folder")
    try:
        state = read_state_dict(args.input)
        depth = infer_depth(state)
        variables = convert_resnet(state, depth)
    except (ValueError, ImportError, FileNotFoundError) as e:
        raise SystemExit(f"vsegjax.models.convert: {e}") from None
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(out, variables)
    ckpt.wait_until_finished()
    print(f"wrote ResNet-{depth} ({sum(np.size(x) for x in jax.tree.leaves(variables)):,} "
          f"values) to {out}; use --config.model.pretrained={out}")


if __name__ == "__main__":
    main(sys.argv[1:])
