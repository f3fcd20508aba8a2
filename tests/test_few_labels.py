"""Every head at 5 labels per class: comparable spreads over the draws, and the dense head's early stopping."""

import functools

import numpy as np
import pytest

import classifiers
from classifiers.dense import early_stopping_split, validation_split
from learning_curves import curves

N_CLASSES, N_FEATURES = 10, 64


def relu_features(labels, seed, active=8, floor=-2.0, signal=2.5):
    """Sparse ReLU features like a CNN's: each class switches on a few units of its own, the rest is mostly 0.

    With 5 images per class many units are 0 on every training row yet fire
    on some test rows, as dead units of fc2 do with few labels. float32 [N, D].
    """
    prototypes = np.full((N_CLASSES, N_FEATURES), floor)
    units = np.random.default_rng(0)
    for label in range(N_CLASSES):
        prototypes[label, units.choice(N_FEATURES, active, replace=False)] += signal
    noise = np.random.default_rng(seed).normal(size=(len(labels), N_FEATURES))
    return np.maximum(prototypes[labels] + noise, 0).astype(np.float32)


@pytest.mark.slow  # 8 fits of the dense head (Keras): ~40 s on 2 cores
def test_at_5_per_class_every_head_spreads_at_most_twice_as_much_as_the_best_head():
    y_train, y_test = np.arange(N_CLASSES * 30) % N_CLASSES, np.arange(N_CLASSES * 50) % N_CLASSES
    X_train, X_test = relu_features(y_train, 1), relu_features(y_test, 2)
    # The default settings, but for the forest's size and the probes' grids (faster, same kind of head).
    heads = {"rf": {"n_estimators": 50, "n_jobs": 1}, "svm": {}, "logreg": {"C": [0.01, 0.1, 1.0]},
             "knn": {"k": [1, 3, 5, 10]}, "dense": {}}
    models = [curves.CurveModel(name, "relu", name, functools.partial(classifiers.build, name, **options),
                                X_train, X_test) for name, options in heads.items()]
    # 8 draws: a standard deviation from 5 is itself too noisy to compare.
    plan = curves.draw_subsets(y_train, [5], repeats=8, seed=42)
    summary = curves.summarise_curves(models, plan, curves.fit_curves(models, y_train, y_test, plan.draws, progress=False))
    at_five = {name: curve["sizes"][0] for name, curve in summary["models"].items()}
    best = max(at_five, key=lambda name: at_five[name]["mean"])
    spreads = {name: size["std"] for name, size in at_five.items()}
    assert all(spread <= 2 * spreads[best] for spread in spreads.values()), (best, spreads)
    assert at_five["dense"]["mean"] >= at_five[best]["mean"] - 0.1, at_five


def test_the_dense_head_holds_out_a_validation_split_only_when_every_class_can_give_enough_rows():
    X = np.zeros((60, 2), np.float32)
    few = np.arange(60) % 10  # 6 a class: 10% of that is 0 rows
    assert early_stopping_split(X, few, 0.1, min_per_class=1, seed=0)[2] is None
    many = np.arange(400) % 4  # 100 a class: 10 held out of each
    X_many = np.arange(800, dtype=np.float32).reshape(400, 2)
    kept = early_stopping_split(X_many, many, 0.1, min_per_class=10, seed=3)
    held = validation_split(X_many, many, 0.1, seed=3)
    np.testing.assert_array_equal(kept[2][0], held[2][0])  # the split the CNNs use, unchanged
    assert np.bincount(kept[2][1]).tolist() == [10] * 4
    assert early_stopping_split(X_many, many, 0.1, min_per_class=11, seed=3)[2] is None
    assert early_stopping_split(X, few, 0.1, min_per_class=0, seed=0)[2] is not None  # 0: always hold out


def test_the_dense_heads_record_says_what_early_stopping_watched(tmp_path):
    from classifiers.training import training_details

    y = np.arange(40) % 4
    X = relu_features(y % N_CLASSES, 0)
    options = {"hidden_units": [8], "epochs": 3}
    few = classifiers.build("dense", 0, **options).fit(X, y)
    assert training_details(few)["monitor"] == "loss"
    held = classifiers.build("dense", 0, min_validation_per_class=1, **options).fit(X, y)
    assert training_details(held)["monitor"] == "val_loss"
