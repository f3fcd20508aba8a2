"""Does the default CNN training do as well as plain training at every size the curves draw?

On Fashion-MNIST as ``params.yaml`` prepares it (by default 2,000 training
and 1,000 test images, seed 42), the learning curves' draws (``curves.per_class``,
``curves.repeats``, nested and stratified, :func:`learning_curves.curves.draw_subsets`)
fit two versions of the same network on the same images:

- ``default``: the ``scratch`` params' defaults (early stopping on a held-out
  share when every class can give ``min_validation_per_class`` images, else
  on the training loss; the batch-norm momentum chosen from the steps an epoch);
- ``fixed``: the same network trained for every one of its ``epochs``, with no
  early stopping and nothing held out (``validation_fraction=0, patience=None``).

It prints, per size, the mean ± standard deviation over the draws and the
difference default - fixed; the target is a difference of at least -0.02.
``--finetune mobilenet_v2`` compares fine-tuning the same way (at
``--finetune-per-class``, default 20)::

    python benchmarks/cnn_few_labels.py                                    # docs/cnn.md's table
    python benchmarks/cnn_few_labels.py --per-class 20 --repeats 2
    python benchmarks/cnn_few_labels.py --per-class --finetune mobilenet_v2 --weights none --input-size 32
"""

import argparse
import functools
import os
import platform
import time

import numpy as np

from classifiers.cnn.estimators import FinetuneClassifier, ScratchCNNClassifier
from learning_curves.curves import CurveModel, draw_subsets, fit_curves, summarise_curves
from pipeline.finetune_params import check_finetune_settings, finetune_settings
from pipeline.params import load_params
from pipeline.scratch_params import scratch_settings
from sources import prepare_dataset

TARGET = -0.02
# Training plainly: every epoch, nothing held out, the last epoch's weights.
FIXED_EPOCHS = {"validation_fraction": 0.0, "patience": None}


def fashion_mnist(path, params):
    """``(train, test)`` images and labels, as ``featpipe prepare`` stores them with ``params``."""
    data = params["data"]
    dataset = prepare_dataset("fashion_mnist", path, seed=params["seed"], train_size=data["train_size"],
                              test_size=data["test_size"])
    return [(dataset.splits[split].images, dataset.splits[split].labels) for split in ("train", "test")]


def finetune_comparison_settings(params, backbone, weights, input_size):
    """What ``featpipe finetune --backbone BACKBONE`` trains with, ``--weights`` and ``--input-size`` put in."""
    check_finetune_settings(backbone, params["finetune"])
    settings = {**finetune_settings(params["finetune"]), "backbone": backbone, "weights": weights}
    if input_size is not None:
        settings["input_size"] = (input_size, input_size)
    return settings


def compare(estimator, settings, train, test, per_class, repeats, seed):
    """The summary of ``default`` and ``fixed`` on the same draws (:func:`summarise_curves`'s models)."""
    n_classes = int(train[1].max()) + 1
    models = [CurveModel(name, "images", name, functools.partial(estimator, n_classes, {**settings, **changes}),
                         train[0], test[0])
              for name, changes in (("default", {}), ("fixed", FIXED_EPOCHS))]
    plan = draw_subsets(train[1], per_class, repeats, seed)
    results = fit_curves(models, train[1], test[1], plan.draws)
    return summarise_curves(models, plan, results)["models"]


def print_table(title, curves):
    print(f"\n{title}\n")
    print("| images per class | default | fixed epochs | default - fixed | target >= -0.02 | fit seconds (default, fixed) |")
    print("| ---: | ---: | ---: | ---: | --- | ---: |")
    for default, fixed in zip(curves["default"]["sizes"], curves["fixed"]["sizes"]):
        difference = default["mean"] - fixed["mean"]
        seconds = f"{np.mean(default['fit_seconds']):.1f}, {np.mean(fixed['fit_seconds']):.1f}"
        print(f"| {default['per_class']} | {default['mean']:.3f} ± {default['std']:.3f} | "
              f"{fixed['mean']:.3f} ± {fixed['std']:.3f} | {difference:+.3f} | "
              f"{'met' if difference >= TARGET else 'MISSED'} | {seconds} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="the data, scratch, finetune and curves settings")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist", help="Fashion-MNIST's IDX files")
    parser.add_argument("--per-class", type=int, nargs="*",
                        help="sizes of the scratch CNN's comparison (default curves.per_class; none given: skip it)")
    parser.add_argument("--repeats", type=int, help="draws per size (default curves.repeats)")
    parser.add_argument("--finetune", metavar="BACKBONE", help="compare fine-tuning this backbone too")
    parser.add_argument("--finetune-per-class", type=int, nargs="+", default=[20])
    parser.add_argument("--weights", help="the backbone's weights (default extract.weights)")
    parser.add_argument("--input-size", type=int, help="side the images are resized to for fine-tuning")
    args = parser.parse_args()
    params = load_params(args.params)
    per_class = params["curves"]["per_class"] if args.per_class is None else args.per_class
    repeats = args.repeats or params["curves"]["repeats"]
    weights = args.weights or params["extract"]["weights"]
    train, test = fashion_mnist(args.data, params)
    print(f"# {platform.node()}, {os.cpu_count()} cores; {len(train[1])} training and {len(test[1])} test images, "
          f"{repeats} draws per size, seed {params['seed']}")
    started = time.perf_counter()
    if per_class:
        curves = compare(ScratchCNNClassifier, scratch_settings(params), train, test, per_class, repeats,
                         params["seed"])
        print_table("scratch CNN (test accuracy, mean ± std over the draws)", curves)
    if args.finetune:
        settings = finetune_comparison_settings(params, args.finetune, weights, args.input_size)
        curves = compare(FinetuneClassifier, settings, train, test, args.finetune_per_class, repeats, params["seed"])
        print_table(f"finetune {args.finetune}, weights {weights}, input size {args.input_size or 'the backbone’s'}",
                    curves)
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
