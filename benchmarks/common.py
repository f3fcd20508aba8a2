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
