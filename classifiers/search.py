"""Optional grid search with stratified k-fold cross-validation on the training set."""

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from plumbing.errors import FeatpipeError


def check_grid(estimator, grid, name):
    """Refuse grid keys the estimator does not take, listing the ones it does."""
    valid = sorted(key for key in estimator.get_params(deep=False) if key != "seed")
    for key in grid:
        if key not in valid:
            raise FeatpipeError(f"search grid for {name}: unknown parameter {key!r}; expected one of: {', '.join(valid)}")


def check_folds(y, cv):
    """Every class needs at least ``cv`` training rows for stratified ``cv``-fold splits."""
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() < cv:
        raise FeatpipeError(
            f"grid search with cv={cv} needs at least {cv} training rows of every class; "
            f"class {classes[counts.argmin()]} has {counts.min()}"
        )


def make_search(estimator, grid, cv, seed, name, n_jobs=-1):
    """A grid search that picks the best mean cross-validated accuracy and refits on all rows.

    Parameters
    ----------
    estimator : unfitted estimator
    grid : dict of {param: list of values}
    cv : int, number of stratified folds (shuffled with ``seed``)
    name : str, the classifier's name, for messages
    n_jobs : int, parallel fits (joblib; a Dask cluster when one is configured)

    Returns
    -------
    sklearn.model_selection.GridSearchCV, unfitted; ``best_estimator_`` is
    the model to save once it is fitted.
    """
    check_grid(estimator, grid, name)
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    return GridSearchCV(estimator, grid, scoring="accuracy", cv=folds, n_jobs=n_jobs, refit=True, error_score="raise")


def summarise(search):
    """What a fitted grid search found: ``cv``, ``grid``, ``best_params``,
    ``cv_accuracy`` (mean over folds), ``cv_accuracy_std`` and ``refit_seconds``."""
    best = search.best_index_
    return {
        "cv": search.cv.get_n_splits(),
        "grid": {key: [_plain(v) for v in values] for key, values in search.param_grid.items()},
        "best_params": {key: _plain(value) for key, value in search.best_params_.items()},
        "cv_accuracy": round(float(search.cv_results_["mean_test_score"][best]), 6),
        "cv_accuracy_std": round(float(search.cv_results_["std_test_score"][best]), 6),
        "refit_seconds": round(float(search.refit_time_), 3),
    }


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def probe_folds(y, cv, seed, name):
    """The stratified folds a probe chooses its setting with: ``cv``, or fewer when a class has fewer rows.

    A draw of 2 images per class can't be cut into 3 stratified folds; it
    can into 2. How many folds ran is recorded with what they chose.

    Parameters
    ----------
    y : ndarray of shape (n_samples,), the training labels
    cv : int, folds asked for
    seed : int, shuffles the rows before they are cut
    name : str, the classifier's name, for messages

    Returns
    -------
    sklearn.model_selection.StratifiedKFold

    Raises
    ------
    FeatpipeError
        A class has a single training row: nothing to hold out.
    """
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() < 2:
        raise FeatpipeError(
            f"{name}: choosing its setting by cross-validation needs at least 2 training rows of every class; "
            f"class {classes[counts.argmin()]} has {counts.min()}"
        )
    return StratifiedKFold(n_splits=int(min(cv, counts.min())), shuffle=True, random_state=seed)


def candidates(values):
    """A grid's values sorted and without duplicates, so a tie goes to the smallest one."""
    return sorted(set(values))


def folds_note(name, y, cv):
    """The line saying a probe runs fewer folds than ``cv`` on labels ``y`` (a class is short), or None."""
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() >= cv or counts.min() < 2:
        return None
    return (f"{name}: {counts.min()}-fold cross-validation instead of cv={cv}: "
            f"class {classes[counts.argmin()]} has only {counts.min()} training rows")
