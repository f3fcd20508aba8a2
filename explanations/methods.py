"""The explanation methods by name, and :func:`explain`, which runs those asked for.

Every map explains the image's true class, with every method, so that the
maps of one image answer the same question; for a misclassified image they
show the evidence the model found (or missed) for the class it should have
given.
"""

import dataclasses
import time

import numpy as np

from explanations.gradients import GRADIENT_METHODS, grad_cam_maps, guided_backprop_maps, guided_grad_cam_maps
from explanations.lime import lime_maps
from explanations.occlusion import occlusion_maps
from plumbing.errors import FeatpipeError
from storage.image_store import check_images

METHODS = {
    "occlusion": occlusion_maps,
    "lime": lime_maps,
    "grad_cam": grad_cam_maps,
    "guided_backprop": guided_backprop_maps,
    "guided_grad_cam": guided_grad_cam_maps,
}
SIGNED_METHODS = ("occlusion", "lime")  # the others' maps are >= 0


@dataclasses.dataclass
class Explanations:
    """The maps of one model for a set of images, and what they rest on.

    Attributes
    ----------
    model : str, the model's name
    maps : dict of method name to ndarray of shape (n_samples, height, width), float32
    settings : dict of method name to dict (the method's settings; per-image arrays included)
    seconds : dict of method name to float, the time each method took
    labels : ndarray of shape (n_samples,), the true (explained) classes
    predicted : ndarray of shape (n_samples,), the model's own predictions
    scores : ndarray of shape (n_samples, n_classes), float32
    score_kind : {"probability", "decision value"}
    classes : ndarray of shape (n_classes,), the label of each score column
    metadata : dict, what the model says of itself (backbone, layer, weights, ...)
    """

    model: str
    maps: dict
    settings: dict
    seconds: dict
    labels: np.ndarray
    predicted: np.ndarray
    scores: np.ndarray
    score_kind: str
    classes: np.ndarray
    metadata: dict


def check_methods(methods):
    """Refuse an unknown method name before any work; returns the names as a list."""
    methods = [methods] if isinstance(methods, str) else list(methods)
    for name in methods:
        if name not in METHODS:
            raise FeatpipeError(f"unknown explanation method {name!r}; expected one of: {', '.join(METHODS)}")
    return methods


def methods_for(model):
    """The methods that apply to ``model``: occlusion and LIME to every one, the gradient methods to Keras graphs."""
    return [name for name in METHODS if model.differentiable or name not in GRADIENT_METHODS]


def applicable_methods(model, methods=None):
    """The methods among ``methods`` (default: all) that apply to ``model``, in the order given."""
    return [name for name in check_methods(methods or list(METHODS)) if name in methods_for(model)]


def explain(model, images, labels, methods=None, *, occlusion=None, lime=None):
    """Maps of ``images`` by each method in ``methods``, for their true classes.

    Parameters
    ----------
    model : classifiers.ImageClassifier
    images : ndarray of shape (n_samples, height, width, channels), uint8
    labels : array-like of shape (n_samples,), the true classes
    methods : list of str or None
        Default: every method that applies to ``model``
        (:func:`applicable_methods`). A method that does not apply is refused.
    occlusion : dict or None
        Keywords of :func:`~explanations.occlusion.occlusion_maps` (``patch``, ``stride``).
    lime : dict or None
        Keywords of :func:`~explanations.lime.lime_maps` (``samples``, ``segments``, ``seed``).

    Returns
    -------
    Explanations
    """
    methods = check_methods(methods) if methods is not None else applicable_methods(model)
    for name in methods:
        if name not in methods_for(model):
            raise FeatpipeError(f"method {name} does not apply to model {model.name}; it takes: {', '.join(methods_for(model))}")
    images = check_images(images)
    labels = np.asarray(labels)
    model.columns(labels, len(images))
    options = {"occlusion": dict(occlusion or {}), "lime": dict(lime or {})}
    predicted, scores = model.predict_with_scores(images)
    maps, settings, seconds = {}, {}, {}
    for name in methods:
        started = time.perf_counter()
        maps[name], settings[name] = METHODS[name](model, images, labels, **options.get(name, {}))
        seconds[name] = time.perf_counter() - started
    return Explanations(
        model=model.name, maps=maps, settings=settings, seconds=seconds, labels=labels,
        predicted=predicted, scores=scores, score_kind=model.score_kind,
        classes=model.classes_, metadata=dict(model.metadata),
    )
