"""What the benchmarks share: a measurement in a fresh process, and feature-like rows.

Each measurement runs in a process of its own, so its peak memory
(``ru_maxrss``) is its own and one measurement's caches don't help the next;
the child prints its result as one JSON line after :data:`RESULT_PREFIX`.
"""

import json
import resource
import subprocess
import sys

import numpy as np

RESULT_PREFIX = "BENCHMARK-RESULT "


def run_measurement(command, what):
    """Run ``command`` (a child measurement); the result dict it printed, or exit naming ``what``."""
    done = subprocess.run(command, capture_output=True, text=True)
    results = [line[len(RESULT_PREFIX):] for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not results:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-5000:])
        raise SystemExit(f"benchmark step {what} failed (exit {done.returncode})")
    return json.loads(results[-1])


def report_result(result):
    """In a child: print ``result``, with the process's peak resident memory, for :func:`run_measurement`."""
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def relu_like_rows(rows, dim, seed=0):
    """Feature-like float32 rows: non-negative, about half of them zero (after a ReLU)."""
    values = np.random.default_rng(seed).standard_normal((rows, dim), dtype=np.float32)
    return np.maximum(values, 0)


def join_writer(out, dim, rows):
    """``(attrs, FeatureWriter)`` of a feature file of ``rows`` train rows of ``dim`` floats: what a join fills."""
    from storage.feature_store import FeatureWriter

    attrs = {"backbone": "bench", "layer": "x", "feature_dim": dim, "class_names": ["a"], "splits": ["train", "test"]}
    splits = {"train": (np.zeros(rows, np.int64), [f"r{i}" for i in range(rows)]), "test": (np.zeros(0, np.int64), [])}
    return attrs, FeatureWriter(out, attrs=attrs, splits=splits, overwrite=True)


def plain_features_dataset(file, shape):
    """The one-thread h5py baseline's dataset: gzip level 1, chunks of 64 rows of 4,096 floats (a MiB)."""
    return file.create_dataset("features", shape=shape, dtype="float32", chunks=(64, shape[1]),
                               compression="gzip", compression_opts=1)
