"""First-call time (compile + one run) of Warp-Refine propagation over a long video.

    python benchmarks/propagate_compile.py [--frames 76 --height 180 --width 240 --classes 11]

The refiner runs as a lax.scan, so compiling should not depend much on the video length;
a constant the size of the whole video inside the jitted function (e.g. the softmax of a
uniform prior) makes XLA constant-fold it and the first call slow. The second call shows
the run time alone.
"""

import argparse
import time

import jax
import numpy as np

from vsegjax.methods.warp_refine import video as wr
def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=76)
    p.add_argument("--height", type=int, default=180)
    p.add_argument("--width", type=int, default=240)
    p.add_argument("--classes", type=int, default=11)
    a = p.parse_args()
    frames = np.random.default_rng(0).uniform(
        size=(a.frames, a.height, a.width, 3)).astype(np.float32)
    flows = np.zeros((a.frames - 1, a.height, a.width, 2), np.float32)
    label = np.zeros((a.height, a.width), np.uint8)
    for prior in ("none", "segmenter"):
        task = wr.WarpRefineTask(wr.video_config(a.classes, (64, 64), steps=1, prior=prior))
        v = task.init_variables(jax.random.key(0))
        times = []
        for _ in range(2):
            start = time.perf_counter()
            task.propagate(v, label, frames, flows)
            times.append(time.perf_counter() - start)
        print(f"prior={prior:9s} {a.frames} frames {a.height}x{a.width}: first call "
              f"{times[0]:.1f} s, second {times[1]:.1f} s")


if __name__ == "__main__":
    main()
