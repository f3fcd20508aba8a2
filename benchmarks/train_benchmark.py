"""How long does each classifier take to fit and predict on CNN-sized features, and how good is it?

Fits every registered classifier, configured as the default ``params.yaml``
configures it, on synthetic N x 4096 features (fc2-like: non-negative,
about half zeros, 10 classes) for N = 2,000, 10,000 and 60,000, and prints
fit and predict seconds and test accuracy as a Markdown table::

    python benchmarks/train_benchmark.py                  # the docs' table
    python benchmarks/train_benchmark.py --sizes 2000 --budget 60
    python benchmarks/train_benchmark.py --only "svm rbf" "svm nystroem" --sizes 10000 20000 60000

The SVM appears three ways: ``svm rbf``, the exact RBF SVC, run only up to
``train.svm.max_rbf_samples`` rows (10,000 by default; its fit time grows
with the square of N); ``svm nystroem``, the approximation ``train`` uses
past that limit (Nystroem with ``train.svm.nystroem_components`` components,
then a linear SVM), run at every N so that it can be compared with the exact
SVC where both run; and ``svm linear`` (LinearSVC on the features). After
the table, two lines check the approximation: its accuracy against the exact
SVC at the largest N where both ran (within 1 point is the aim), and how its
fit time grows from the smallest N past the limit to the largest (linear
growth means the time ratio equals the rows ratio).

A fit whose time, extrapolated from the previous N, would pass ``--budget``
seconds is skipped and the table says so.

``--cores`` measures instead what the cores bring: every head fitted at
20,000 rows in a process held to one core (its CPU affinity) and in one
given every core, the two fit times and their ratio; the SVM also at 60,000
rows, against the formulation it replaced (Nystroem, then scikit-learn's
LinearSVC, which fits on one core) timed on one core in the same run; and
``curves``, every head's learning curves as the default params draw them
from those rows::

    python benchmarks/train_benchmark.py --cores
    python benchmarks/train_benchmark.py --cores --rows 2000 --svm-rows 4000 --dim 512   # a quick look
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import classifiers  # noqa: E402
from benchmarks.common import report_result, run_measurement  # noqa: E402
from classifiers.evaluation import fit_and_evaluate  # noqa: E402
from pipeline.params import defaults  # noqa: E402

N_CLASSES = 10
N_TEST = 2000
CLASS_OFFSET = 0.02
DETECTORS, DETECTOR_BOOST = 16, 1.2
# How fit time grows with N, to decide whether the next size fits the budget.
GROWTH = {"rf": 1.2, "svm rbf": 2.0, "svm nystroem": 1.1, "svm linear": 1.2, "dense": 1.1, "logreg": 1.1, "knn": 2.0}


def synthetic_features(n, dim, seed):
    """fc2-like features: ReLU of a shared profile, class offsets, a few class "detector" units, and noise.

    Sized so that a linear SVM and a forest score about 0.85 at N = 2,000,
    near what they reach on real fc2 features of Fashion-MNIST: an easier
    problem would flatter the SVMs (fewer support vectors) and the forest
    (shallower trees).

    Returns float32 features of shape (n, dim) and labels of shape (n,).
    """
    profiles = np.random.default_rng(0)
    means = profiles.standard_normal(dim, dtype=np.float32)
    means = means + CLASS_OFFSET * profiles.standard_normal((N_CLASSES, dim), dtype=np.float32)
    for label in range(N_CLASSES):
        means[label, label * DETECTORS : (label + 1) * DETECTORS] += DETECTOR_BOOST
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASSES, size=n)
    features = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 5000):  # in blocks: no float64 copy of a 60,000-row matrix
        block = labels[start : start + 5000]
        noise = rng.standard_normal((len(block), dim), dtype=np.float32)
        features[start : start + len(block)] = np.maximum(means[block] + noise, 0.0)
    return features, labels


def variants(n, settings, only=None):
    """(label, registry name, options, reason not to run or None) at N = ``n``; ``only`` keeps those labels."""
    svm = settings["svm"]
    runs = [("rf", "rf", settings["rf"], None)]
    too_many = f"not run: past max_rbf_samples={svm['max_rbf_samples']:,}, where `train` approximates the kernel"
    runs.append(("svm rbf", "svm", {**svm, "kernel": "rbf"}, too_many if n > svm["max_rbf_samples"] else None))
    # max_rbf_samples=1: the approximation at every N, to compare it with the exact SVC where both run.
    runs.append(("svm nystroem", "svm", {**svm, "kernel": "rbf", "max_rbf_samples": 1}, None))
    runs.append(("svm linear", "svm", {**svm, "kernel": "linear"}, None))
    runs.append(("dense", "dense", settings["dense"], None))
    runs.append(("logreg", "logreg", settings["logreg"], None))
    runs.append(("knn", "knn", settings["knn"], None))
    return [run for run in runs if not only or run[0] in only]


def estimate(label, n, previous):
    """Seconds a fit at ``n`` rows would take, from the last measured size (None if none)."""
    if label not in previous:
        return None
    n_before, seconds = previous[label]
    return seconds * (n / n_before) ** GROWTH[label]


def benchmark(sizes, dim, budget, seed, only=None, components=None):
    """Fit and predict every variant at every size; print each row as it comes.

    Returns
    -------
    dict of (label, n) to ``(fit seconds, accuracy)``, the fits that ran
    """
    settings = defaults()["train"]
    if components is not None:
        settings["svm"]["nystroem_components"] = components
    test_X, test_y = synthetic_features(N_TEST, dim, seed=seed + 1)
    previous, measured = {}, {}
    for n in sizes:
        train_X, train_y = synthetic_features(n, dim, seed=seed)
        for label, name, options, reason in variants(n, settings, only):
            guess = estimate(label, n, previous)
            if reason is None and guess is not None and guess > budget:
                reason = f"skipped: about {guess / 60:.0f} min expected (budget {budget / 60:.0f} min)"
            if reason:
                print_row((n, label, None, None, None, reason))
                continue
            estimator = classifiers.build(name, seed, **options)
            model, _, metrics = fit_and_evaluate(estimator, train_X, train_y, test_X, test_y, [str(c) for c in range(N_CLASSES)])
            previous[label] = (n, metrics["fit_seconds"])
            measured[label, n] = (metrics["fit_seconds"], metrics["accuracy"])
            print_row((n, label, metrics["fit_seconds"], metrics["predict_seconds"], metrics["accuracy"], fit_note(model)))
        del train_X
    return measured


def fit_note(model):
    """What the fit decided: the dense head's epochs, the approximation's components, a probe's choice."""
    if hasattr(model, "epochs_run_"):
        return f"{model.epochs_run_} epochs"
    details = getattr(model, "fit_details_", None) or {}
    if "n_components" in details:
        return f"{details['n_components']:,} components"
    if "selected" in details:
        return ", ".join(f"{key}={value}" for key, value in details["selected"].items()) + f" ({details['cv']}-fold)"
    return ""


def approximation_checks(measured, components):
    """The approximation against the exact SVC where both ran, and how its fit time grows with N.

    The growth is measured over the sizes with at least ``components`` rows,
    where the approximation has all its components (below, it has one per row).
    """
    lines = []
    both = sorted(n for label, n in measured if label == "svm rbf" and ("svm nystroem", n) in measured)
    if both:
        n = both[-1]
        exact, approximate = measured["svm rbf", n][1], measured["svm nystroem", n][1]
        lines.append(f"# at {n:,} rows the approximated RBF SVM scores {approximate:.3f} against the exact SVC's "
                     f"{exact:.3f}: {100 * (approximate - exact):+.1f} points (the aim: within 1 point)")
    grown = sorted(n for label, n in measured if label == "svm nystroem" and n >= components)
    if len(grown) >= 2:
        low, high = grown[0], grown[-1]
        ratio = measured["svm nystroem", high][0] / measured["svm nystroem", low][0]
        lines.append(f"# the approximated RBF SVM's fit time from {low:,} to {high:,} rows: x{ratio:.1f} for "
                     f"x{high / low:.1f} the rows (linear growth: equal ratios)")
    return lines


def print_header(sizes, dim, budget):
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    print(f"# train benchmark: synthetic N x {dim} features, {N_CLASSES} classes; predict on {N_TEST:,} rows")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.2f} at start; "
          f"fits over ~{budget / 60:.0f} min (extrapolated) are skipped")
    print("# classifiers as configured by the default params.yaml (rf: 200 trees, all cores; svm: C=10, exact "
          "RBF up to train.svm.max_rbf_samples rows, the Nystroem approximation and LinearSVC at any N; dense: "
          "256 units, early stopping; logreg and knn: C and k chosen by 3-fold cross-validation)")
    print()
    print("| N | classifier | fit s | predict s | accuracy | note |")
    print("| ---: | --- | ---: | ---: | ---: | --- |")


def print_row(row):
    n, label, fit, predict, accuracy, note = row
    cells = [f"{n:,}", label] + (["—", "—", "—"] if fit is None else [f"{fit:.1f}", f"{predict:.2f}", f"{accuracy:.3f}"])
    print("| " + " | ".join(cells + [note]) + " |", flush=True)


class LiblinearApproximation:
    """The approximated RBF SVM as `train` fitted it before the least-squares head: Nystroem, then LinearSVC.

    The baseline of ``--cores``: standardise, resolve ``gamma="scale"`` on
    the standardised rows, map onto the Nystroem landmarks, LinearSVC (liblinear).
    """

    def __init__(self, C, n_components, seed):
        self.C, self.n_components, self.seed = C, n_components, seed

    def fit(self, X, y):
        from sklearn.kernel_approximation import Nystroem
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import LinearSVC

        from classifiers.svm import rbf_gamma

        scale = StandardScaler().fit(X)
        scaled = scale.transform(X)
        nystroem = Nystroem(gamma=rbf_gamma("scale", scaled), n_components=min(self.n_components, len(X)),
                            random_state=self.seed).fit(scaled)
        svc = LinearSVC(C=self.C, dual="auto", random_state=self.seed).fit(nystroem.transform(scaled), y)
        self.pipeline_ = Pipeline([("scale", scale), ("nystroem", nystroem), ("svc", svc)])
        return self

    def predict(self, X):
        return self.pipeline_.predict(X)


def one_fit(head, rows, dim, seed):
    """In a child process: fit ``head`` as the default params configure it (or the baseline) and report it."""
    settings = defaults()["train"]
    if head == "svm liblinear":
        estimator = LiblinearApproximation(settings["svm"]["C"], settings["svm"]["nystroem_components"], seed)
    else:
        estimator = classifiers.build(head, seed, **settings[head])
    train_X, train_y = synthetic_features(rows, dim, seed=seed)
    test_X, test_y = synthetic_features(N_TEST, dim, seed=seed + 1)
    model, _, metrics = fit_and_evaluate(estimator, train_X, train_y, test_X, test_y, [str(c) for c in range(N_CLASSES)])
    report_result({"fit_seconds": metrics["fit_seconds"], "accuracy": metrics["accuracy"], "note": fit_note(model)})


def one_curves(rows, dim, seed, keras=True):
    """In a child process: the learning curves of every head (``keras=False``: but the dense head), as `curves` fits them."""
    import functools

    from learning_curves.curves import CurveModel, draw_subsets, fit_curves

    params = defaults()
    train_X, train_y = synthetic_features(rows, dim, seed=seed)
    test_X, test_y = synthetic_features(N_TEST, dim, seed=seed + 1)
    heads = [head for head in params["train"]["classifiers"] if keras or head != "dense"]
    models = [CurveModel(f"synthetic-{head}", "synthetic", head,
                         functools.partial(classifiers.build, head, **params["train"][head]), train_X, test_X)
              for head in heads]
    plan = draw_subsets(train_y, params["curves"]["per_class"], params["curves"]["repeats"], seed)
    start = time.perf_counter()
    results = fit_curves(models, train_y, test_y, plan.draws, progress=False)
    seconds = time.perf_counter() - start
    mean = float(np.mean([fit.accuracy for fit in results]))
    report_result({"fit_seconds": round(seconds, 3), "accuracy": mean,
                   "note": f"{len(results)} fits: {', '.join(heads)} x {len(plan.per_class)} sizes x {plan.repeats} draws"})


def fit_on_cores(head, rows, dim, seed, cores):
    """Fit ``head`` in a fresh process whose CPU affinity is ``cores`` (a set of CPU numbers); its report."""
    what = {"curves": ["--one-curves"], "curves scikit-learn": ["--one-curves", "--no-keras"]}.get(head, ["--one-fit", head])
    command = [sys.executable, __file__, *what, "--rows", str(rows), "--dim", str(dim), "--seed", str(seed)]
    # taskset sets the affinity before Python starts, so that BLAS, OpenMP, joblib and TensorFlow all
    # size their thread pools to it.
    return run_measurement(["taskset", "-c", ",".join(map(str, sorted(cores))), *command], f"{head} on {len(cores)} cores")


def cores_benchmark(rows, svm_rows, dim, seed, heads):
    """The SVM at ``svm_rows`` against its former formulation, then every head on one core and on every core."""
    every = os.sched_getaffinity(0)
    one = {min(every)}
    print(f"# train benchmark --cores: synthetic N x {dim} features, {N_CLASSES} classes, {len(every)} cores; "
          f"heads as the default params.yaml configures them; fit seconds, each fit in a fresh process")
    print()
    print("| N | classifier | 1 core s | all cores s | speed-up | accuracy 1 / all | note |")
    print("| ---: | --- | ---: | ---: | ---: | --- | --- |")
    if svm_rows:
        before = fit_on_cores("svm liblinear", svm_rows, dim, seed, one)
        print(f"| {svm_rows:,} | svm: Nystroem + LinearSVC (the former formulation) | {before['fit_seconds']:.1f} | — | — | "
              f"{before['accuracy']:.4f} / — | |", flush=True)
        now = print_cores_row("svm", svm_rows, dim, seed, one, every)
        summary = (f"# svm at {svm_rows:,} rows on {len(every)} cores: {now['fit_seconds'] / before['fit_seconds']:.2f} of "
                   f"the former formulation's one-core time (target <= 0.3), accuracy "
                   f"{100 * (now['accuracy'] - before['accuracy']):+.2f} points (target: within 0.5)")
    for head in heads:
        print_cores_row(head, rows, dim, seed, one, every)
    if svm_rows:
        print(summary)


def print_cores_row(head, rows, dim, seed, one, every):
    """Fit ``head`` on one core and on ``every`` core, print the table row; the every-core report."""
    alone, together = fit_on_cores(head, rows, dim, seed, one), fit_on_cores(head, rows, dim, seed, every)
    print(f"| {rows:,} | {head} | {alone['fit_seconds']:.1f} | {together['fit_seconds']:.1f} | "
          f"x{alone['fit_seconds'] / together['fit_seconds']:.2f} | {alone['accuracy']:.4f} / "
          f"{together['accuracy']:.4f} | {together['note']} |", flush=True)
    return together


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000, 60000])
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--budget", type=float, default=900.0, help="skip fits expected to take longer (seconds)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--only", nargs="+", choices=sorted(GROWTH), help="run only these classifiers")
    parser.add_argument("--nystroem-components", type=int, default=None,
                        help="components of the approximation (default: train.svm.nystroem_components)")
    parser.add_argument("--cores", action="store_true", help="one core against every core (see above)")
    parser.add_argument("--rows", type=int, default=20000, help="--cores: training rows of every head")
    parser.add_argument("--svm-rows", type=int, default=60000, help="--cores: the SVM's rows against its baseline; 0: none")
    parser.add_argument("--heads", nargs="*", default=["rf", "svm", "dense", "logreg", "knn", "curves", "curves scikit-learn"],
                        help="--cores: these heads; curves: every head's learning curves (accuracy: the mean over "
                             "the fits), curves scikit-learn: without the dense head")
    parser.add_argument("--one-fit", help=argparse.SUPPRESS)
    parser.add_argument("--one-curves", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-keras", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_fit:
        return one_fit(args.one_fit, args.rows, args.dim, args.seed)
    if args.one_curves:
        return one_curves(args.rows, args.dim, args.seed, keras=not args.no_keras)
    if args.cores:
        return cores_benchmark(args.rows, args.svm_rows, args.dim, args.seed, args.heads)
    print_header(args.sizes, args.dim, args.budget)
    start = time.perf_counter()
    measured = benchmark(sorted(args.sizes), args.dim, args.budget, args.seed, args.only, args.nystroem_components)
    print()
    components = args.nystroem_components or defaults()["train"]["svm"]["nystroem_components"]
    for line in approximation_checks(measured, components):
        print(line)
    print(f"# total {time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
