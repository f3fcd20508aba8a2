"""The ``rf`` classifier: a random forest, on feature vectors or (the pixel baseline) raw pixels."""

from sklearn.ensemble import RandomForestClassifier

from classifiers.registry import register


@register("rf")
def random_forest(seed, n_estimators=200, max_depth=None, max_features="sqrt", criterion="gini", n_jobs=-1):
    """Random forest (scikit-learn), trees grown in parallel."""
    return RandomForestClassifier(
        n_estimators=n_estimators,
        criterion=criterion,
        max_depth=max_depth,
        max_features=max_features,
        n_jobs=n_jobs,
        random_state=seed,
    )
