"""Overhead of ``gradvitals.keras.VitalsCallback`` on ``model.fit``: watched / unwatched time.

A small MLP on synthetic data is trained for one epoch per timed ``fit`` call. Each
variant keeps its own model and callback; a first untimed ``fit`` per variant traces
the train step (and the probe). The timed fits are interleaved (plain, watched,
plain, ...) in a rotating order, and medians are reported, so a loaded machine
affects every variant alike. Both wall time and the process's CPU time are reported;
on a shared machine the CPU time is the steadier of the two. TF runs on one thread by
default here (``--threads``), which also steadies the numbers.

Variants:

- ``plain``: no callback.
- ``watched``: ``VitalsCallback(probe=..., every=20)`` (the defaults).
- ``watched_every5``: the same, ``every=5`` (four times as many probe steps).
- ``noop_batch_end``: a callback whose ``on_train_batch_end`` does nothing. Keras then
  turns off async dispatch and converts every batch's logs to floats: the cost of the
  hook gradvitals does *not* use.
- ``noop_batch_begin``: a callback whose ``on_train_batch_begin`` does nothing: the
  floor of the hook gradvitals uses.

Usage::

    python benchmarks/keras_overhead.py            # a few minutes on 2 CPU cores
    python benchmarks/keras_overhead.py --smoke    # plain and watched only, seconds
    python benchmarks/keras_overhead.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _setup(args: argparse.Namespace) -> dict[str, Callable[[], tuple[float, float]]]:
    import keras
    import numpy as np
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    from gradvitals.keras import VitalsCallback

    rng = np.random.default_rng(0)
    n = args.steps * args.batch
    x = rng.standard_normal((n, args.features)).astype("float32")
    w = rng.standard_normal((args.features, 10)).astype("float32")
    y = (x @ w).argmax(1).astype("int32")

    class NoopEnd(keras.callbacks.Callback):  # type: ignore[misc]
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            pass

    class NoopBegin(keras.callbacks.Callback):  # type: ignore[misc]
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            pass

    def make(callbacks: list[Any]) -> Callable[[], tuple[float, float]]:
        keras.utils.set_random_seed(0)
        layers: list[Any] = [keras.Input((args.features,))]
        layers += [keras.layers.Dense(args.width, activation="relu") for _ in range(args.depth)]
        layers.append(keras.layers.Dense(10))
        model = keras.Sequential(layers)
        model.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )

        def fit() -> tuple[float, float]:
            t, c = time.perf_counter(), time.process_time()
            model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0, callbacks=callbacks)
            return time.perf_counter() - t, time.process_time() - c

        fit()  # trace the train step and the probe
        return fit

    probe = (x[:512], y[:512])
    variants = {
        "plain": lambda: make([]),
        "watched": lambda: make([VitalsCallback(probe=probe, console=False)]),
        "watched_every5": lambda: make([VitalsCallback(probe=probe, every=5, console=False)]),
        "noop_batch_end": lambda: make([NoopEnd()]),
        "noop_batch_begin": lambda: make([NoopBegin()]),
    }
    names = ["plain", "watched"] if args.smoke else list(variants)
    return {k: variants[k]() for k in names}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="a tiny run (seconds)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps", type=int, default=400, help="batches per timed fit")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument(
        "--threads", type=int, default=1, help="TF intra/inter-op threads (0: TF's default)"
    )
    p.add_argument("--json", default=None, help="also write the results there")
    args = p.parse_args(argv)
    if args.smoke:
        args.repeats, args.steps = 2, 40

    variants = _setup(args)
    names = list(variants)
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for r in range(args.repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            w, c = variants[name]()
            wall[name].append(w)
            cpu[name].append(c)
    med_wall = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}

    import keras
    import tensorflow as tf

    result = {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "wall_s": wall,
        "cpu_s": cpu,
        "median_wall_s": med_wall,
        "median_cpu_s": med_cpu,
        "wall_ratio": {k: v / med_wall["plain"] for k, v in med_wall.items()},
        "cpu_ratio": {k: v / med_cpu["plain"] for k, v in med_cpu.items()},
    }
    print(
        f"{args.steps} steps/fit, batch {args.batch}, MLP {args.depth}x{args.width}, "
        f"{args.repeats} interleaved repeats, {result['device']}, tf {tf.__version__}, "
        f"{args.threads or 'default'} TF thread(s), load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'variant':<18}{'wall ms/step':>14}{'x plain':>9}{'cpu ms/step':>13}{'x plain':>9}")
    for k in names:
        print(
            f"{k:<18}{1000 * med_wall[k] / args.steps:>14.3f}{result['wall_ratio'][k]:>9.3f}"
            f"{1000 * med_cpu[k] / args.steps:>13.3f}{result['cpu_ratio'][k]:>9.3f}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
