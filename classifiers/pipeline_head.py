"""The base of the heads that choose their settings, then keep one plain scikit-learn pipeline.

``knn``, ``logreg`` and ``svm`` each fit in their own way and keep the result
in ``pipeline_``; predictions pass straight through to it, and the model
file holds that pipeline alone (:func:`classifiers.model_files.save_pipeline`),
so loading it needs scikit-learn only.
"""

from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.metaestimators import available_if


def _pipeline_has(method):
    # available_if: the method exists when the fitted pipeline's last step has it (an SVC has no
    # predict_proba, a kNN no decision_function), as on the pipeline itself.
    return lambda self: hasattr(self.pipeline_, method)


class PipelineHead(ClassifierMixin, BaseEstimator):
    """A classifier whose ``fit`` sets ``pipeline_`` (a fitted :class:`~sklearn.pipeline.Pipeline`) and ``classes_``."""

    def predict(self, X):
        """Labels for ``X``, ndarray of shape (n_samples,)."""
        return self.pipeline_.predict(X)

    @available_if(_pipeline_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities, ndarray of shape (n_samples, n_classes)."""
        return self.pipeline_.predict_proba(X)

    @available_if(_pipeline_has("decision_function"))
    def decision_function(self, X):
        """Decision values, ndarray of shape (n_samples, n_classes), or (n_samples,) for two classes."""
        return self.pipeline_.decision_function(X)
