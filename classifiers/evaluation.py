"""Checking training data, fitting with timings, and scoring on the test split."""

import csv
import json
import time
import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from plumbing.atomic import atomic_output
from plumbing.errors import FeatpipeError

FINITE_CHECK_ROWS = 4096


def check_training_data(X, y, what="training set"):
    """Refuse data no classifier can learn from, with one line saying why.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
    what : str, names the data in the message (e.g. ``vgg16-fc2.h5 train``)
    """
    if X.ndim != 2 or len(X) != len(y):
        raise FeatpipeError(f"{what}: expected features [N, D] and N labels, got {X.shape} and {len(y)} labels")
    check_labels(y, what)
    check_finite(X, what)


def check_labels(y, what="training set"):
    """Refuse an empty or single-class training set."""
    if len(y) == 0:
        raise FeatpipeError(f"{what} is empty")
    classes = np.unique(y)
    if len(classes) < 2:
        raise FeatpipeError(f"{what} holds a single class ({classes[0]}); a classifier needs at least two")


def check_finite(X, what):
    """Refuse NaN or infinite features; checked in row blocks to bound memory."""
    for start in range(0, len(X), FINITE_CHECK_ROWS):
        block = X[start : start + FINITE_CHECK_ROWS]
        bad = ~np.isfinite(block)
        if bad.any():
            row, column = np.argwhere(bad)[0]
            raise FeatpipeError(
                f"{what}: features hold NaN or infinite values (first at row {start + row}, column {column}); "
                f"re-extract them (e.g. with extract.precision: float32)"
            )


def fit_and_evaluate(estimator, X_train, y_train, X_test, y_test, class_names):
    """Fit ``estimator``, predict the test split and score it.

    Parameters
    ----------
    X_train : ndarray of shape (n_train, n_features)
    y_train : ndarray of shape (n_train,), class indices
    X_test : ndarray of shape (n_test, n_features)
    y_test : ndarray of shape (n_test,), class indices
    class_names : list of str, the name of each class index

    Returns
    -------
    estimator : the fitted estimator
    predicted : ndarray of shape (n_test,)
    metrics : dict, see :func:`score`, plus ``fit_seconds``, ``predict_seconds``,
        ``n_train``, ``n_test`` and ``n_features``
    """
    start = time.perf_counter()
    estimator.fit(X_train, y_train)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    predicted = estimator.predict(X_test)
    predict_seconds = time.perf_counter() - start
    metrics = score(y_test, predicted, class_names)
    metrics.update(
        fit_seconds=round(fit_seconds, 3),
        predict_seconds=round(predict_seconds, 3),
        n_train=int(len(y_train)),
        n_test=int(len(y_test)),
        n_features=int(X_train.shape[1]),
    )
    return estimator, predicted, metrics


def score(y_true, y_pred, class_names):
    """Accuracy, balanced accuracy, macro F1 and per-class precision/recall.

    Parameters
    ----------
    y_true, y_pred : ndarray of shape (n_samples,), class indices
    class_names : list of str

    Returns
    -------
    dict with ``accuracy``, ``balanced_accuracy``, ``macro_f1`` (floats) and
    ``per_class`` (``{name: {"precision", "recall", "support"}}``).
    """
    labels = np.arange(len(class_names))
    precision, recall, _, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    with warnings.catch_warnings():
        # A class predicted but absent from a tiny test set is fine to score.
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(y_true, y_pred)
    present = labels[support > 0]
    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 6),
        "balanced_accuracy": round(float(balanced), 6),
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)), 6),
        "per_class": {
            name: {"precision": round(float(p), 6), "recall": round(float(r), 6), "support": int(s)}
            for name, p, r, s in zip(class_names, precision, recall, support)
        },
    }


def confusion_counts(y_true, y_pred, n_classes):
    """Counts, ndarray of shape (n_classes, n_classes): rows actual, columns predicted."""
    return confusion_matrix(y_true, y_pred, labels=np.arange(n_classes))


def write_confusion_csv(path, y_true, y_pred, class_names):
    """One ``actual,predicted`` row per test sample, by class name: DVC's confusion plot input."""
    rows = ({"actual": class_names[a], "predicted": class_names[p]} for a, p in zip(y_true, y_pred))
    write_csv(path, ["actual", "predicted"], rows)


def write_json(path, data, compact=()):
    """Write ``data`` as indented, strict JSON (no NaN or Infinity), atomically.

    ``compact`` names top-level keys holding long lists: each of their items
    goes on one line instead of one line per number.
    """
    placeholders = {key: [f"@compact:{key}:{i}@" for i in range(len(data[key]))] for key in compact}
    text = json.dumps({**data, **placeholders}, indent=2, sort_keys=False, allow_nan=False)
    for key in compact:
        for placeholder, item in zip(placeholders[key], data[key]):
            text = text.replace(f'"{placeholder}"', json.dumps(item, allow_nan=False))
    with atomic_output(path) as aside:
        aside.write_text(text + "\n")


def write_csv(path, header, rows):
    """Write dicts keyed by ``header`` as a CSV with that header, atomically."""
    with atomic_output(path) as aside:
        with open(aside, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)


def save_confusion(csv_path, png_path, y_true, y_pred, class_names, title):
    """A model's confusion matrix, as DVC's plot input (CSV) and as a PNG titled ``title``.

    Parameters
    ----------
    y_true, y_pred : ndarray of shape (n_test,), class indices
    class_names : list of str
    """
    from reporting.plots import save_confusion_png

    write_confusion_csv(csv_path, y_true, y_pred, class_names)
    save_confusion_png(png_path, confusion_counts(y_true, y_pred, len(class_names)), class_names, title)


def data_record(store_attrs):
    """What a metrics record says about the images: source, subset sizes, store fingerprint.

    Parameters
    ----------
    store_attrs : dict, the image store's root attributes (``-1`` sizes mean "all")
    """
    def size(key):
        value = store_attrs.get(key)
        return None if value in (None, -1) else int(value)

    return {
        "source": store_attrs.get("source"),
        "train_size": size("train_size"),
        "test_size": size("test_size"),
        "image_store_fingerprint": store_attrs.get("fingerprint"),
    }
