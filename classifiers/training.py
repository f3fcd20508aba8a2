"""Train one registered classifier on a feature matrix and score it: what ``train`` runs per model."""

from classifiers import registry
from classifiers.cores import fits_in_this_process
from classifiers.evaluation import fit_and_evaluate
from classifiers.search import make_search, summarise


def train_and_score(name, options, seed, train, test, class_names, grid=None, cv=3):
    """Build classifier ``name``, fit it (with a grid search when ``grid`` is given) and score it.

    Parameters
    ----------
    name : str, a registered classifier
    options : dict, the builder's keyword arguments (e.g. ``train.rf`` from params)
    seed : int
    train, test : tuple ``(X, y)``, X ndarray of shape (n_samples, n_features),
        y ndarray of shape (n_samples,) of class indices
    class_names : list of str
    grid : dict of {param: list of values} or None
    cv : int, folds of the grid search

    Returns
    -------
    model : the fitted estimator to save (the best one after a search)
    predicted : ndarray of shape (n_test,)
    metrics : dict (see :func:`classifiers.evaluation.fit_and_evaluate`), with
        ``search`` (the search summary or None) and ``training`` (details
        such as epochs run, or None)
    """
    estimator = registry.build(name, seed, **options)
    if grid:
        n_jobs = 1 if fits_in_this_process(estimator) else -1
        estimator = make_search(estimator, grid, cv, seed, name, n_jobs=n_jobs)
    fitted, predicted, metrics = fit_and_evaluate(estimator, *train, *test, class_names)
    metrics["search"] = summarise(fitted) if grid else None
    model = fitted.best_estimator_ if grid else fitted
    metrics["training"] = training_details(model)
    return model, predicted, metrics


def training_details(model):
    """What the fit decided by itself, or ``None``.

    The dense head's epochs; whatever else an estimator records in
    ``fit_details_`` (a dict): the SVM's kernel approximation, the value a
    probe chose by cross-validation.
    """
    if hasattr(model, "epochs_run_"):
        details = {"epochs_run": int(model.epochs_run_), "best_epoch": int(model.best_epoch_)}
        return {**details, "monitor": model.monitor_} if hasattr(model, "monitor_") else details
    return getattr(model, "fit_details_", None)


def check_fit(name, options, seed, y):
    """Check that classifier ``name`` can fit on labels ``y``; the line to say when the fit is not what its settings name.

    For example, an RBF SVM past ``max_rbf_samples`` rows approximates its
    kernel, and a probe cross-validates with fewer folds when a class is
    short. Returns ``None`` when there is nothing to say.

    Parameters
    ----------
    y : ndarray of shape (n_samples,), the training labels

    Raises
    ------
    FeatpipeError
        The fit can't run on these labels (a probe with a single row of a class).
    """
    estimator = registry.build(name, seed, **options)
    check = getattr(estimator, "check_fit", None)
    return check(y) if check is not None else None
