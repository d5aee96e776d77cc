"""Can one host feed its chips? The paper configs' input pipelines, per host core.

    python benchmarks/input_throughput.py                 # the four Cityscapes configs
    python benchmarks/input_throughput.py --configs grfp_cityscapes --batches 6

For each config's first training stage the task's own ``train_iterator`` (the trainer's
grain pipeline: record decoding, window sampling, scale/crop/flip/colour augmentation,
the task's host batch function such as Warp-Refine's DIS flow) runs over
Cityscapes-shaped records: ``cityscapes_sequences``' features (30 frames of 1024x2048,
raw uint8 frames, zlib labels on the 20th frame), filled by upscaling the synthetic
renderer's frames and serialised exactly as TFDS stores them, so each read pays TFDS's
deserialisation. The pipeline runs with one reading thread and a prefetch of one batch,
and the figure is the process's CPU time per snippet (all its threads; so a busy machine
does not inflate it), over ``--batches`` batches after the first. ``--report r.json`` (``vsegjax.compile
--out``) sets each against the roofline step time of its train step: the host cores one
chip needs is (snippets per chip per step) x (seconds per snippet) / (step seconds).
VPLR's propagated stream (read from its SDC stage's files) is not included: its
original stream (class-uniform sampling) is.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


class SerializedSource:
    """``n`` records served by index like ``tfds.data_source``: each read deserialises the
    stored bytes with the dataset's own feature spec."""

    def __init__(self, features, records: list[bytes], n: int):
        self.features, self.records, self.n = features, records, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.features.deserialize_example_np(self.records[i % len(self.records)])


def cityscapes_records(features, count: int = 2, size=(1024, 2048), frames: int = 30,
                       labelled: int = 19) -> list[bytes]:
    """``count`` records of ``features``: synthetic frames upscaled to ``size``."""
    from vsegjax.data.synthetic import SyntheticConfig, generate_snippet
    h, w = size
    out = []
    for index in range(count):
        snip = generate_snippet(SyntheticConfig(height=h // 4, width=w // 4, num_frames=frames,
                                                label_index=labelled, seed=index), "train", index)
        up = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR)
                       for f in snip["frames"]])
        labels = np.full((frames, h, w), 255, np.uint8)
        labels[labelled] = cv2.resize(snip["labels"][labelled], (w, h),
                                      interpolation=cv2.INTER_NEAREST)
        example = {"frames": up, "labels": labels,
                   "has_label": np.arange(frames) == labelled,
                   "label_index": np.int32(labelled), "snippet_id": np.int64(index),
                   "frame_index": np.int64(0)}
        keys = set(features.keys())
        missing = keys - set(example)
        if missing:
            raise SystemExit(f"the benchmark does not fill the features {sorted(missing)}")
        out.append(features.serialize_example({k: example[k] for k in keys}))
    return out


def measure(config_name: str, batches: int, records: list[bytes], features) -> list[dict]:
    from vsegjax.core import experiment
    from vsegjax.data import datasets
    from vsegjax.methods import REGISTRY
    import importlib.util
    spec = importlib.util.spec_from_file_location("cfg", ROOT / "configs" / f"{config_name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    if "vplr" in config:  # its original stream only: the propagated one needs an SDC run
        config.vplr.mode = "none"
    import functools

    from vsegjax.data import pipeline
    source = SerializedSource(features, records, n=64)  # class-uniform indexes them all
    original, make_dataset = datasets.open_split, pipeline.make_dataset
    datasets.open_split = lambda data, split: source  # every split: the same records
    # One reading thread, one batch ahead: the CPU time between two reads is one batch's.
    pipeline.make_dataset = functools.partial(make_dataset, read_threads=1,
                                              prefetch_buffer_size=1)
    out = []
    try:
        import tempfile
        with tempfile.TemporaryDirectory() as workdir:
            for stage in experiment.resolve_stages(config, workdir, REGISTRY):
                stage.config.input.worker_count = 0  # in this process, on its one core
                task = experiment.build_task(stage, REGISTRY)
                iterator = task.train_iterator(0)
                next(iterator)  # warm-up (and class-uniform sampling's index)
                start = time.process_time()
                for _ in range(batches):
                    batch = next(iterator)
                seconds = time.process_time() - start
                rows = int(stage.config.input.batch_size)
                out.append({"config": config_name, "stage": stage.name, "batch_size": rows,
                            "seconds_per_snippet": seconds / (batches * rows),
                            "snippets_per_s_per_core": batches * rows / seconds,
                            "batch_shapes": {k: list(np.shape(v)) for k, v in batch.items()
                                             if np.ndim(v) >= 3}})
    finally:
        datasets.open_split, pipeline.make_dataset = original, make_dataset
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="grfp_cityscapes,efc_cityscapes,"
                        "warp_refine_cityscapes,vplr_cityscapes")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--report", action="append", default=[],
                        help="vsegjax.compile --out JSON: step times to set against")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    from vsegjax.data import datasets
    from configs import common
    features = datasets.get_builder(common.cityscapes_data()).info.features
    records = cityscapes_records(features)
    steps = {}
    for path in args.report:
        for r in json.loads(pathlib.Path(path).read_text()):
            if r["step"] == "train" and not r.get("error"):
                name = pathlib.Path(r.get("config", "")).stem
                steps[(name, r["stage"], r["topology"])] = (r["roofline_step_s"], r["chips"],
                                                            r["batch_size"])
    print("| config | stage | batch | CPU s per snippet | snippets/s per core | "
          "topology | roofline step ms | host cores per chip |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.configs.split(","):
        for m in measure(name, args.batches, records, features):
            head = (f"| {name} | {m['stage']} | {m['batch_size']} | "
                    f"{m['seconds_per_snippet']:.2f} | {m['snippets_per_s_per_core']:.2f} | ")
            rows = [(t, s) for (c, st, t), s in steps.items() if c == name and st == m["stage"]]
            for topology, (step_s, chips, batch) in rows:
                need = (batch / chips) * m["seconds_per_snippet"] / step_s
                print(head + f"{topology} | {step_s * 1e3:.0f} | {need:.1f} |", flush=True)
            if not rows:
                print(head + "- | - | - |", flush=True)
            print(f"  {name} {m['stage']} batch: {m['batch_shapes']}", file=sys.stderr)


if __name__ == "__main__":
    main()
