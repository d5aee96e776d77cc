"""The one training loop every method shares.

Resume order (as in big_vision): the latest checkpoint in ``workdir``, else
``config.train.init_from`` (another run's parameters merged by the task), else fresh
initialisation. Parameters are created in place on the mesh by a jitted init with
``out_shardings`` (replicated, or FSDP-sharded with ``mesh.fsdp > 1``; see
``vsegjax.core.sharding``); batches are sharded over all the mesh's devices. The step key is
``fold_in(root_key, step)`` and the input iterator's position is checkpointed, so a
resumed run continues exactly as an uninterrupted one would.

The loop never waits for the device between steps: a non-finite loss or gradient is
recorded on the device (the first bad step, after which the state stops moving) and read
every ``train.check_finite_every`` steps (default ``log_every``) and before anything is
saved, so a bad step is never saved. SIGTERM finishes the step in progress, saves it and
raises ``Preempted`` (``vsegjax.main`` exits 0); Ctrl-C does the same and raises
``KeyboardInterrupt``. The same command resumes.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import ml_collections
import tqdm
from absl import logging
from clu import metrics as clu_metrics
from jax.sharding import NamedSharding, PartitionSpec as P

from vsegjax import files
from vsegjax.core import checkpoint
from vsegjax.core import preemption
from vsegjax.core import setup
from vsegjax.core import sharding
from vsegjax.core import writers
from vsegjax.core.step import WHY, Divergence, TrainState, initial_guard
from vsegjax.core.task import Task


class NonFiniteLossError(RuntimeError):
    """Raised when a step is bad (loss, gradient or new parameters not finite, or the loss
    diverging; ``vsegjax.core.step``); the bad state is never saved."""


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    step: int
    last_metrics: dict[str, float]
    workdir: str


def _metric_collection(names) -> type[clu_metrics.Collection]:
    return clu_metrics.Collection.create(**{n: clu_metrics.Average.from_output(n) for n in names})


def train(config: ml_collections.ConfigDict, workdir: str, task: Task) -> TrainResult:
    """Trains ``task`` for ``config.train.num_steps`` steps in ``workdir`` (resuming if possible).

    Config fields used: ``seed``, ``train.{num_steps, log_every, checkpoint_every,
    eval_every, keep_checkpoints, init_from, async_checkpoints, check_finite_every,
    grad_accum_steps}``, ``optimizer.*`` (see ``vsegjax.core.optim``) and
    ``mesh.{num_devices, fsdp, fsdp_min_size}``.
    """
    config = task.resolve_config(config)
    tcfg = config.train
    workdir = files.resolve(workdir)
    files.makedirs(workdir)
    num_steps = int(tcfg.num_steps)
    mesh = sharding.make_mesh(config.mesh.num_devices or None, fsdp=config.mesh.fsdp)
    replicated = NamedSharding(mesh, P())
    built = setup.build(config, task, mesh)
    state_sharding, schedule, rule = built.state_sharding, built.schedule, built.rule
    create_state, init_key, tx = built.create_state, built.init_key, built.tx
    abstract_state = built.abstract_state

    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                   max_to_keep=tcfg.keep_checkpoints,
                                   async_save=tcfg.async_checkpoints)
    task.bind_mesh(mesh)
    data_iter = task.train_iterator(config.seed)
    if ckpt.latest_step() is not None:
        state, _ = ckpt.restore(abstract_state, data_iter)
        logging.info("resumed from %s at step %d", ckpt.directory, int(state.step))
    else:
        state = jax.jit(create_state, out_shardings=state_sharding)(init_key)

        def start_from(variables):  # new parameters, placed as the state's, fresh optimiser
            params, model_state = jax.device_put(setup.split_variables(variables),
                                                 (state_sharding.params,
                                                  state_sharding.model_state))
            return state.replace(params=params, model_state=model_state, opt_state=jax.jit(
                tx.init, out_shardings=state_sharding.opt_state)(params))

        pretrained = task.pretrained_source()  # model.pretrained, for a task with one
        if pretrained and not tcfg.init_from:  # init_from already holds a backbone
            state = start_from(task.load_pretrained(
                {"params": state.params, **state.model_state}, pretrained))
            logging.info("backbone initialised from %s", pretrained)
        if tcfg.init_from:
            fresh = {"params": state.params, **state.model_state}
            # Only the groups this model shares are read, each checked against its shapes.
            state = start_from(task.init_from(fresh, checkpoint.load_groups(tcfg.init_from,
                                                                            fresh)))
            logging.info("initialised from %s", tcfg.init_from)

    step_fn = built.step_fn
    guard = jax.device_put(initial_guard(rule), replicated)

    def check_finite() -> None:
        bad = jax.device_get(guard)
        if int(bad["step"]) >= 0:
            raise _bad_step_error(bad, ckpt, rule)

    writer = writers.create_writer(workdir)
    start = int(jax.device_get(state.step))
    report = writers.ProgressReport(num_steps, writer, tcfg.report_every_secs)
    log_every = max(1, tcfg.log_every)
    ckpt_every = tcfg.checkpoint_every or num_steps
    check_every = max(1, tcfg.check_finite_every or log_every)
    eval_every = tcfg.eval_every
    collection = metric_cls = None
    last: dict[str, float] = {}
    meta = {"config": config.to_json_best_effort()}
    if start == 0:
        writer.write_hparams({k: v for k, v in _flatten(config.to_dict()).items()})

    bar = tqdm.tqdm(total=num_steps, initial=start, desc=f"train {os.path.basename(workdir)}",
                    unit="step", disable=jax.process_index() != 0 or start >= num_steps)
    t0 = time.time()
    # Input position after k batches, for the last two k: the pair saved on Ctrl-C must
    # match the state's own step, whichever statement the interrupt lands on.
    positions = {start: data_iter.get_state()}
    stop = preemption.StopSignal()
    try:
        for step in range(start + 1, num_steps + 1):
            host_batch = next(data_iter)
            positions = {step - 1: positions[step - 1], step: data_iter.get_state()}
            # Rebind `state` at once: the call donates (deletes) the old buffers.
            state, metrics, guard = step_fn(state, sharding.to_global_batch(host_batch, mesh),
                                            guard)
            if metric_cls is None:
                metric_cls = _metric_collection(sorted(metrics))
            single = metric_cls.single_from_model_output(**metrics)
            collection = single if collection is None else collection.merge(single)
            report(step)
            bar.update(1)
            save = step % ckpt_every == 0 or step == num_steps
            evaluate = eval_every and (step % eval_every == 0 or step == num_steps)
            if step % check_every == 0 or save or evaluate:
                check_finite()
            if step % log_every == 0 or step == num_steps:
                last = {k: float(v) for k, v in collection.compute().items()}
                # The rate of the step just taken (optax counts updates from 0).
                writer.write_scalars(step, dict(last, learning_rate=float(schedule(step - 1))))
                bar.set_postfix(loss=f"{last['loss']:.4f}")
                collection = None
            if save:
                ckpt.save(step, state, data_iter, meta)
                writer.flush()  # a bucket's metrics files are uploaded with each checkpoint
            if stop.interrupted:  # Ctrl-C: saved by the handler below, at a clean point
                raise KeyboardInterrupt
            if stop.should_stop(step):
                check_finite()
                if not ckpt.has_step(step):
                    ckpt.save(step, state, data_iter, meta)
                ckpt.close()
                bar.close()
                raise preemption.Preempted(step, ckpt.directory)
            if evaluate:
                scores = task.evaluate(state.params, state.model_state, step)
                if scores:
                    writer.write_scalars(step, {f"eval/{k}": v for k, v in scores.items()})
    except KeyboardInterrupt:
        _save_on_interrupt(ckpt, state, data_iter, positions, meta, check_finite)
        raise
    finally:
        stop.close()
        writer.flush()  # the rows logged so far reach the files, whatever stopped the loop
    bar.close()
    ckpt.close()
    if start < num_steps:
        logging.info("trained %d steps in %.1f s", num_steps - start, time.time() - t0)
    return TrainResult(state=state, step=int(jax.device_get(state.step)), last_metrics=last,
                       workdir=workdir)


def _bad_step_error(bad: dict, ckpt: checkpoint.Checkpointer,
                    rule: Divergence) -> NonFiniteLossError:
    """The one-line error for the guard's first bad step, naming the checkpoint to go on from."""
    step, why = int(bad["step"]), int(bad["why"])
    ckpt.wait()
    # A diverging loss at step s was computed from step s - 1's parameters, so the last
    # good checkpoint is before that; otherwise step s - 1 itself is good.
    good = ckpt.last_good(step - 2 if why == 3 else step - 1)
    where = (f"The last good checkpoint is step {good} in {ckpt.directory}."
             if good is not None else f"No good checkpoint was saved in {ckpt.directory}.")
    later = [s for s in ckpt.all_steps() if good is None or s > good]
    if later:
        where += f" (Step {later[0]} holds the state that went bad.)"
    detail = f"loss {float(bad['loss']):.6g}, grad_norm {float(bad['grad_norm']):.6g}"
    if why == 3:
        detail += (f", above {rule.factor:g} x {float(bad['reference']):.6g} (the median of "
                   f"the last accepted losses; train.divergence sets the rule)")
    return NonFiniteLossError(f"{WHY.get(why, 'bad step')} at step {step}: {detail}; "
                              f"training stopped. {where}")


def _save_on_interrupt(ckpt: checkpoint.Checkpointer, state: TrainState, data_iter: Any,
                       positions: dict[int, Any], meta: dict, check_finite) -> None:
    """Saves the last completed step (with its input position) unless already saved or
    not finite."""
    try:
        if any(x.is_deleted() for x in jax.tree.leaves(state) if isinstance(x, jax.Array)):
            logging.warning("interrupted while a step was being dispatched; nothing saved "
                            "beyond step %s", ckpt.latest_step())
            return
        done = int(jax.device_get(state.step))
        try:
            check_finite()
        except NonFiniteLossError as e:
            logging.warning("interrupted after a non-finite step; nothing saved: %s", e)
            return
        if done in positions and not ckpt.has_step(done):
            data_iter.set_state(positions[done])
            ckpt.save(done, state, data_iter, meta)
            logging.warning("interrupted: saved step %d to %s", done, ckpt.directory)
    finally:
        ckpt.close()


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
