"""Parameter + optimiser bytes per device for ResNet-101 PSP, replicated vs FSDP.

    python benchmarks/fsdp_memory.py [--devices 8 --classes 19 --optimizer sgd]

Shapes only (``jax.eval_shape``): nothing is allocated, so this runs on a laptop. The
state is the trainer's (parameters, batch-norm statistics, optimiser state) placed by
``vsegjax.core.sharding.state_shardings`` on a ``1 x N`` (replicated) and an
``N``-way ``fsdp`` mesh of fake CPU devices.
"""

import argparse
import os
import sys

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--devices", type=int, default=8)
parser.add_argument("--classes", type=int, default=19)
parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
parser.add_argument("--min_size", type=int, default=2 ** 16,
                    help="mesh.fsdp_min_size: smaller arrays stay replicated")
args = parser.parse_args()
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           f" --xla_force_host_platform_device_count={args.devices}")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from vsegjax.models.segmenter import make_segmenter  # noqa: E402
from vsegjax.core import config as core_config  # noqa: E402
from vsegjax.core import optim  # noqa: E402
from vsegjax.core import sharding


def main() -> None:
    if jax.device_count() < args.devices:
        sys.exit(f"only {jax.device_count()} devices (is XLA_FLAGS set elsewhere?)")
    model = make_segmenter({"backbone": "resnet101", "head": "psp",
                            "num_classes": args.classes})
    variables = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 64, 64, 3))),
                               jax.random.PRNGKey(0))
    opt_cfg = core_config.sgd_poly(0.01, name=args.optimizer)
    tx = optim.make_optimizer(opt_cfg, 1000, variables["params"])
    state = {"variables": variables, "opt_state": jax.eval_shape(tx.init, variables["params"])}
    count = sum(x.size for x in jax.tree.leaves(variables["params"]))
    print(f"ResNet-101 PSP, {args.classes} classes: {count / 1e6:.1f} M parameters, "
          f"optimiser {args.optimizer}, {args.devices} devices")
    print(f"{'layout':<22}{'params+stats MiB':>18}{'optimiser MiB':>15}{'total MiB':>11}")
    for name, fsdp in (("replicated", 1), (f"fsdp over {args.devices}", args.devices)):
        mesh = sharding.make_mesh(args.devices, fsdp=fsdp)
        shardings = sharding.state_shardings(state, mesh, args.min_size)
        placed = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                              state, shardings)
        mib = {k: sharding.bytes_per_device(v) / 2 ** 20 for k, v in placed.items()}
        print(f"{name:<22}{mib['variables']:>18.1f}{mib['opt_state']:>15.1f}"
              f"{sum(mib.values()):>11.1f}")


if __name__ == "__main__":
    main()
