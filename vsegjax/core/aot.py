"""Compiling a config's steps for a TPU topology that is not attached (ahead of time).

For each enabled stage the train step is built as the trainer builds it
(``core.setup.build``: same task, loss, optimiser, state and batch shardings, remat,
dtype and gradient accumulation), on a mesh over the topology's abstract devices, and
compiled by libtpu; so is the evaluation step (the stage's per-frame function at the
evaluation size, where its task segments). The compiler's own analyses give per-chip HBM
and per-step FLOPs and bytes (``cost_analysis()`` counts a loop body once: the other
iterations of each ``lax.scan`` are added from the compiled HLO, ``hlo_costs.loop_extra``);
``core.tpu.roofline`` turns them into a bound on the step time and on the model-FLOPs
utilisation. No data is read: the batch is the task's ``batch_spec``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding, PartitionSpec as P

from vsegjax.core import experiment, hlo_costs, setup, sharding, tpu
from vsegjax.core.registry import Registry
from vsegjax.core.step import initial_guard
from vsegjax.data import datasets
from vsegjax.data.pipeline import batch_axes, check_batch_size


@dataclasses.dataclass
class StepReport:
    """The compiler's figures for one step of one stage, per chip."""

    stage: str
    step: str  # "train" | "eval"
    topology: str
    chips: int
    hosts: int
    batch_size: int  # global
    argument_bytes: int
    output_bytes: int
    temp_bytes: int
    alias_bytes: int  # outputs written in place of donated arguments (the train state)
    hbm_bytes_per_chip: int
    hbm_capacity_bytes: int
    fits: bool
    flops_per_chip: float
    bytes_accessed_per_chip: float
    roofline_step_s: float
    compute_s: float
    memory_s: float
    mfu_bound: float
    flops_per_byte: float
    compile_s: float
    # What the shardings put on each chip: the train state's parameters, the whole state
    # and the batch (the compiler's argument bytes should be state + batch + guard).
    param_bytes_per_chip: int = 0
    # Set where libtpu refused the step (e.g. its temporaries exceed the HBM); the byte
    # and FLOP figures are then 0 but for the temporaries it names.
    error: str = ""
    state_bytes_per_chip: int = 0
    batch_bytes_per_chip: int = 0
    # libtpu's cost model: the step's estimated cycles and the source lines (and single
    # instructions) with the largest shares (``core.hlo_costs``).
    estimated_cycles: int = 0
    # cost_analysis() counts each loop body once; flops/bytes above add the other
    # iterations (``hlo_costs.loop_extra``). Its own figures and the loops' trip counts:
    cost_analysis_flops: float = 0.0
    cost_analysis_bytes: float = 0.0
    loop_trip_counts: list = dataclasses.field(default_factory=list)
    top_lines: list = dataclasses.field(default_factory=list)
    top_instructions: list = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _abstract(tree: Any, sharding_of: Callable[[Any], Any]) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                       sharding=sharding_of(x)), tree)


def _report(compiled: Any, stage: str, step: str, topology: tpu.Topology, batch_size: int,
            compile_s: float, hlo_dir: str | None = None, **placed: int) -> StepReport:
    text = compiled.as_text()
    if hlo_dir:  # the compiled program, with libtpu's per-instruction estimates in it
        os.makedirs(hlo_dir, exist_ok=True)
        with open(os.path.join(hlo_dir, f"{stage}_{step}_{topology.name}.hlo.txt"), "w") as f:
            f.write(text)
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    extra = hlo_costs.loop_extra(text)
    flops = float(cost.get("flops", 0.0)) + extra["flops"]
    accessed = float(cost.get("bytes accessed", 0.0)) + extra["bytes"]
    args, out = int(mem.argument_size_in_bytes), int(mem.output_size_in_bytes)
    temp, alias = int(mem.temp_size_in_bytes), int(mem.alias_size_in_bytes)
    total = args + out + temp - alias
    capacity = topology.chip.hbm_bytes
    cycles, lines, instructions = hlo_costs.breakdown(text, top=10)
    return StepReport(estimated_cycles=cycles, cost_analysis_flops=float(cost.get("flops", 0.0)),
                      cost_analysis_bytes=float(cost.get("bytes accessed", 0.0)),
                      loop_trip_counts=extra["loops"],
                      top_lines=[[c.where, round(c.share, 4)] for c in lines],
                      top_instructions=[[c.where, round(c.share, 4)] for c in instructions],
                      stage=stage, step=step, topology=topology.name, chips=topology.chips,
                      hosts=topology.hosts, batch_size=batch_size, argument_bytes=args,
                      output_bytes=out, temp_bytes=temp, alias_bytes=alias,
                      hbm_bytes_per_chip=total, hbm_capacity_bytes=capacity,
                      fits=total <= capacity, flops_per_chip=flops,
                      bytes_accessed_per_chip=accessed, compile_s=compile_s,
                      **placed,
                      **tpu.roofline(flops, accessed, topology.chip))


def _out_of_memory(error: Exception, stage: str, step: str, topology: tpu.Topology,
                   batch_size: int, compile_s: float) -> StepReport:
    """The report of a step libtpu refused for its memory (RESOURCE_EXHAUSTED)."""
    text = str(error).splitlines()[0]
    found = re.search(r"temporaries \(([\d.]+)([KMGT])\)", text)
    temp = int(float(found.group(1)) * 1024 ** "KMGT".index(found.group(2)) * 1024) \
        if found else 0
    return StepReport(stage=stage, step=step, topology=topology.name, chips=topology.chips,
                      hosts=topology.hosts, batch_size=batch_size, argument_bytes=0,
                      output_bytes=0, temp_bytes=temp, alias_bytes=0, hbm_bytes_per_chip=temp,
                      hbm_capacity_bytes=topology.chip.hbm_bytes, fits=False,
                      flops_per_chip=0.0, bytes_accessed_per_chip=0.0, roofline_step_s=0.0,
                      compute_s=0.0, memory_s=0.0, mfu_bound=0.0, flops_per_byte=0.0,
                      compile_s=compile_s, error=text)


def _compile(lowered: Any) -> tuple[Any | None, Exception | None, float]:
    """(compiled, None, seconds), or (None, the error, seconds) where libtpu ran out of
    HBM (any other error is raised)."""
    start = time.time()
    try:
        return lowered.compile(), None, time.time() - start
    except Exception as e:  # noqa: BLE001 - XLA's errors have no class of their own here
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        return None, e, time.time() - start


def check_no_host_calls(program: str, stage: str) -> None:
    """Refuses a train step that calls back to the host (``jax.pure_callback``, which a
    TPU lowers to host transfers from one chip): on a pod every step would gather the
    whole batch onto that chip and its host. Host work (OpenCV flow) belongs in the
    input pipeline, where ``flow.source=farneback|dis`` puts it."""
    if "is_host_transfer = true" in program or "callback" in program:
        raise ValueError(f"stage {stage}: the train step calls back to the host "
                         "(jax.pure_callback); on a pod that gathers the whole batch onto "
                         "one chip every step: compute it in the input pipeline instead")


def _batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, P(batch_axes(mesh, sharding.BATCH_AXES)))


def compile_train_step(stage: experiment.Stage, task: Any, topology: tpu.Topology,
                       devices: list[Any], hlo_dir: str | None = None) -> StepReport:
    """The stage's train step compiled for ``topology``, with the compiler's figures."""
    config = stage.config
    mesh = sharding.make_mesh(config.mesh.num_devices or None, fsdp=config.mesh.fsdp,
                              devices=devices)
    spec = task.batch_spec(int(config.input.batch_size))
    # The step's rows (VPLR and EFC append their second stream's) split over the chips.
    batch_size = int(spec["frames"].shape[0])
    check_batch_size(batch_size, process_count=topology.hosts, mesh=mesh)
    built = setup.build(config, task, mesh)
    batch = _abstract(spec, lambda _: _batch_sharding(mesh))
    replicated = NamedSharding(mesh, P())
    guard = _abstract(jax.eval_shape(lambda: initial_guard(built.rule)), lambda _: replicated)
    lowered = built.step_fn.lower(built.abstract_state, batch, guard)
    check_no_host_calls(lowered.as_text(), stage.name)
    compiled, error, seconds = _compile(lowered)
    if error is not None:
        return _out_of_memory(error, stage.name, "train", topology, batch_size, seconds)
    return _report(compiled, stage.name, "train", topology, batch_size, seconds, hlo_dir,
                   param_bytes_per_chip=sharding.bytes_per_device(built.abstract_state.params),
                   state_bytes_per_chip=sharding.bytes_per_device(built.abstract_state),
                   batch_bytes_per_chip=sharding.bytes_per_device(batch))


def eval_size(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """(H, W) the evaluation runs at: ``input.augment.resize``, else the dataset's own."""
    resize = config.input.augment.resize
    if resize:
        return int(resize[0]), int(resize[1])
    shape = datasets.get_builder(config.data).info.features["frames"].shape
    return int(shape[1]), int(shape[2])


def compile_eval_step(stage: experiment.Stage, task: Any, topology: tpu.Topology,
                      devices: list[Any], hlo_dir: str | None = None) -> StepReport | None:
    """The stage's per-frame function (what ``segment``/``export`` run) on a batch of
    ``eval.batch_size`` frames at the evaluation size, with replicated variables; None
    for a task that does not segment."""
    if not task.segments:
        return None
    config = stage.config
    mesh = sharding.make_mesh(config.mesh.num_devices or None, fsdp=1, devices=devices)
    rows = int(config.eval.batch_size)
    rows = -(-rows // mesh.size) * mesh.size  # rounded up to the devices, as the report does
    abstract = jax.eval_shape(task.init_variables, jax.random.PRNGKey(0))
    params, model_state = setup.split_variables(abstract)
    predictor = task.predictor(params, model_state)
    replicated = NamedSharding(mesh, P())
    variables = _abstract(predictor.variables, lambda _: replicated)
    h, w = eval_size(config)
    frames = jax.ShapeDtypeStruct((rows, h, w, 3), jnp.float32, sharding=_batch_sharding(mesh))
    fn = jax.jit(predictor.frame_logits, out_shardings=_batch_sharding(mesh))
    compiled, error, seconds = _compile(fn.lower(variables, frames))
    if error is not None:
        return _out_of_memory(error, stage.name, "eval", topology, rows, seconds)
    return _report(compiled, stage.name, "eval", topology, rows, seconds, hlo_dir,
                   batch_bytes_per_chip=sharding.bytes_per_device(frames))


def compile_config(config: ml_collections.ConfigDict, topology_name: str, registry: Registry,
                   *, eval_step: bool = True, hlo_dir: str | None = None,
                   progress: Callable[[str], None] = print) -> list[StepReport]:
    """Every enabled stage's train (and evaluation) step compiled for ``topology_name``."""
    topology = tpu.parse(topology_name)
    devices = tpu.devices(topology)
    reports = []
    with tempfile.TemporaryDirectory() as workdir:  # tasks may cache beside a stage
        for stage in experiment.resolve_stages(config, workdir, registry):
            task = experiment.build_task(stage, registry)
            progress(f"compiling stage {stage.name} ({stage.task_name}) train step for "
                     f"{topology.name} ({topology.chips} chips, {topology.hosts} hosts)")
            reports.append(compile_train_step(stage, task, topology, devices, hlo_dir))
            if eval_step:
                found = compile_eval_step(stage, task, topology, devices, hlo_dir)
                if found is not None:
                    reports.append(found)
    return reports


def format_report(r: StepReport) -> str:
    gib = 2 ** 30
    if r.error:
        return (f"{r.stage:<16} {r.step:<5} {r.topology:<10} batch {r.batch_size:<4} "
                f"DOES NOT FIT: {r.error}")
    return (f"{r.stage:<16} {r.step:<5} {r.topology:<10} batch {r.batch_size:<4} "
            f"HBM {r.hbm_bytes_per_chip / gib:6.2f} / {r.hbm_capacity_bytes / gib:5.1f} GiB "
            f"({'fits' if r.fits else 'DOES NOT FIT'}; args {r.argument_bytes / gib:.2f}, "
            f"temp {r.temp_bytes / gib:.2f}, out {r.output_bytes / gib:.2f}) "
            f"{r.flops_per_chip / 1e12:8.3f} TFLOP {r.bytes_accessed_per_chip / 1e9:8.2f} GB "
            f"roofline {r.roofline_step_s * 1e3:8.2f} ms MFU<={r.mfu_bound:.3f} "
            f"compile {r.compile_s:.0f} s"
            + "".join(f"\n    {share * 100:5.1f}% of the estimated cycles: {where}"
                      for where, share in r.top_lines[:5]))
