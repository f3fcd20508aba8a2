"""Every trained model as one object: stored uint8 images in, class scores out.

An :class:`ImageClassifier` takes images as the image store holds them,
uint8 of shape (n, H, W, C), and has scikit-learn manners: ``predict``,
``predict_proba`` where the model has probabilities, ``decision_function``
where it has decision values instead (the SVM: then ``predict_proba``
raises ``AttributeError``, as scikit-learn's does), ``classes_``. What its
scores are is said, never blurred: :attr:`ImageClassifier.score_kind` is
``"probability"`` or ``"decision value"``. ``predict`` is the estimator's
own (an SVC's votes, not the arg-max of its decision values).

A :class:`KerasImageClassifier` is also one Keras graph from pixels to
class probabilities (:meth:`KerasImageClassifier.graph`), so methods that
differentiate through it (the gradient explanations) apply too.

Constructors, one per kind of model featpipe trains:

- :func:`pixel_model`: a classifier on raw pixels (the pixel forest);
- :func:`feature_model`: a :class:`~features.engine.FeatureExtractor`
  followed by a classifier on its rows; with a Keras head (``dense``) it is
  one Keras graph, uint8 images → the extractor's own resize and rescale →
  backbone → head;
- :func:`keras_image_model`: a Keras CNN that takes the stored images and
  outputs class probabilities (``scratch-cnn``, ``<backbone>-finetune``).

:func:`classifiers.loading.load_model` builds the right one from a model
folder. Keras is imported only when a Keras model is built or run.
"""

import hashlib

import numpy as np
from sklearn.utils.metaestimators import available_if

from plumbing.errors import FeatpipeError
from storage.image_store import check_images

SCORE_KINDS = ("probability", "decision value")


class ImageClassifier:
    """A trained classifier as a black box: uint8 images in, a score per class out.

    Parameters
    ----------
    name : str
        The model's name in outputs, e.g. ``"vgg16-fc2-rf"``.
    score_function : callable
        ``score_function(inputs)``, ``inputs`` being ``transform(images)``
        for at most ``batch_size`` images, returns an array of shape
        (n, n_classes) (or (n,) for a binary decision function: the score of
        ``classes[1]``).
    classes : array-like of shape (n_classes,)
        The label of each score column (class indices of the image store).
    score_kind : {"probability", "decision value"}
    transform : callable or None
        ``transform(images) -> inputs``: what the estimator was fitted on
        (pixel matrices, a backbone's feature rows); ``None``: the images.
    label_function : callable or None
        ``label_function(inputs) -> labels``, the estimator's own
        ``predict``; ``None``: the class of the highest score.
    batch_size : int
        Images per call of ``transform`` and ``score_function``.
    metadata : dict or None
        What output files say about the model (backbone, layer, weights, ...).
    class_names : list of str or None
        The name of each class index.
    image_shape : tuple of (height, width, channels) or None
        The image store's image shape the model was trained on; images of
        another shape are refused. ``None``: not checked.
    record : classifiers.records.ModelRecord or None
        The record it was trained with (what its stage wrote).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    differentiable : bool, whether the model is one Keras graph from pixels to scores
    """

    differentiable = False

    def __init__(
        self, name, score_function, classes, score_kind="probability", *, transform=None, label_function=None,
        batch_size=64, metadata=None, class_names=None, image_shape=None, record=None,
    ):  # fmt: skip
        if score_kind not in SCORE_KINDS:
            raise ValueError(f"score_kind must be one of {SCORE_KINDS}; got {score_kind!r}")
        self.name = name
        self.classes_ = np.asarray(classes)
        self.score_kind = score_kind
        self.batch_size = int(batch_size)
        self.metadata = dict(metadata or {})
        self.class_names = None if class_names is None else list(class_names)
        self.image_shape = None if image_shape is None else tuple(int(size) for size in image_shape)
        self.record = record
        self._score_function = score_function
        self._transform = transform
        self._label_function = label_function

    def scores(self, images):
        """Class scores of ``images``: probabilities or decision values, as :attr:`score_kind` says.

        Parameters
        ----------
        images : ndarray of shape (n_samples, height, width, channels), uint8

        Returns
        -------
        ndarray of shape (n_samples, n_classes), float32
        """
        parts = [self._score_batch(self._inputs(batch)) for batch in self._batches(images)]
        return np.concatenate(parts) if parts else np.empty((0, len(self.classes_)), np.float32)

    def predict(self, images):
        """Predicted classes of ``images``: ndarray of shape (n_samples,), values of :attr:`classes_`."""
        return self.predict_with_scores(images)[0]

    def predict_with_scores(self, images):
        """``(predict(images), scores(images))`` with one pass of each batch through the model."""
        labels, scores = [], []
        for batch in self._batches(images):
            inputs = self._inputs(batch)
            batch_scores = self._score_batch(inputs)
            scores.append(batch_scores)
            labels.append(self._labels(inputs, batch_scores))
        if not scores:
            return self.classes_[:0], np.empty((0, len(self.classes_)), np.float32)
        return np.concatenate(labels), np.concatenate(scores)

    @available_if(lambda self: self.score_kind == "probability")
    def predict_proba(self, images):
        """Class probabilities of ``images``: ndarray of shape (n_samples, n_classes), float32."""
        return self.scores(images)

    @available_if(lambda self: self.score_kind == "decision value")
    def decision_function(self, images):
        """Decision values of ``images``: ndarray of shape (n_samples, n_classes), float32.

        With two classes the second column is scikit-learn's decision value
        (that of ``classes_[1]``) and the first its negation.
        """
        return self.scores(images)

    def columns(self, labels, count=None):
        """The score column of each label; ``count`` is the number of images the labels must match."""
        labels = np.asarray(labels)
        if labels.ndim != 1 or (count is not None and len(labels) != count):
            raise FeatpipeError(f"expected one label per image ({count}); got labels of shape {labels.shape}")
        index = {label: column for column, label in enumerate(self.classes_.tolist())}
        unknown = sorted({label for label in labels.tolist() if label not in index})
        if unknown:
            raise FeatpipeError(f"labels {unknown} are not classes of model {self.name}; it knows {self.classes_.tolist()}")
        return np.array([index[label] for label in labels.tolist()], dtype=np.int64)

    def check_images(self, images):
        """``images`` as an ndarray, refused in one line unless shaped as the model's image store holds them."""
        images = check_images(images, f"images for model {self.name}")
        if self.image_shape is not None and tuple(images.shape[1:]) != self.image_shape:
            expected = "x".join(map(str, self.image_shape))
            raise FeatpipeError(
                f"model {self.name} takes {expected} images (its image store's: {_channel_words(self.image_shape[-1])}); "
                f"got {'x'.join(map(str, images.shape[1:]))}: decode image files with `featpipe predict`, which makes them so"
            )
        return images

    def _batches(self, images):
        images = self.check_images(images)
        return (images[start : start + self.batch_size] for start in range(0, len(images), self.batch_size))

    def _inputs(self, images):
        return images if self._transform is None else self._transform(images)

    def _score_batch(self, inputs):
        scores = np.asarray(self._score_function(inputs), dtype=np.float32)
        if scores.ndim == 1 and len(self.classes_) == 2:
            scores = np.stack([-scores, scores], axis=1)  # a binary decision function scores classes_[1]
        if scores.shape != (len(inputs), len(self.classes_)):
            raise ValueError(f"{self.name}: expected scores of shape {(len(inputs), len(self.classes_))}, got {scores.shape}")
        return scores

    def _labels(self, inputs, scores):
        if self._label_function is None:
            return self.classes_[scores.argmax(axis=1)]
        return np.asarray(self._label_function(inputs))


def _channel_words(channels):
    return "grayscale" if channels == 1 else "RGB"


class KerasImageClassifier(ImageClassifier):
    """A model that is one Keras graph from images to class probabilities.

    Parameters
    ----------
    name : str
    build_graph : callable
        ``build_graph(image_shape)`` returns a ``keras.Model`` that maps
        images of ``image_shape`` (height, width, channels), uint8 or
        float32 0-255, to class probabilities (n, n_classes).
    classes : array-like of shape (n_classes,)
    conv_layer : str or None
        The layer Grad-CAM reads; ``None``: the last convolutional block.
    batch_size : int
    metadata : dict or None
    score_function, transform : callable or None
        What :meth:`scores` runs instead of the graph: the same numbers by
        another route (a feature model scores through its extractor, whose
        rows other classifiers on the same features reuse).
    device : str or None
        Where the graphs run, e.g. ``"gpu:0"``; ``None`` lets the backend choose.
    **described
        ``class_names``, ``image_shape``, ``record``: see :class:`ImageClassifier`.
    """

    differentiable = True

    def __init__(
        self, name, build_graph, classes, *, conv_layer=None, batch_size=32, metadata=None, score_function=None,
        transform=None, device=None, **described,
    ):  # fmt: skip
        super().__init__(
            name, score_function or self._forward, classes, "probability", transform=transform, batch_size=batch_size,
            metadata=metadata, **described,
        )  # fmt: skip
        self.conv_layer = conv_layer
        self.device = device
        self._build_graph = build_graph
        self._graphs = {}
        self._compiled = {}  # id(keras model) -> (model, its compiled forward)

    def graph(self, image_shape):
        """The Keras model for images of ``image_shape`` (built once per shape)."""
        image_shape = tuple(int(size) for size in image_shape)
        if image_shape not in self._graphs:
            self._graphs[image_shape] = self._build_graph(image_shape)
        return self._graphs[image_shape]

    def run(self, keras_model, inputs):
        """One of this model's Keras graphs on at most ``batch_size`` rows of ``inputs``; float32 NumPy.

        The forward pass is compiled once per graph (:func:`compiled_forward`);
        rows are padded as :func:`padded_batch` says, so it is traced for a
        few batch shapes only.
        """
        from plumbing.backend import device_scope, load_keras

        key = id(keras_model)
        if key not in self._compiled:
            self._compiled[key] = (keras_model, compiled_forward(keras_model))  # the model kept, so its id stays its own
        with device_scope(load_keras(), self.device):
            return predict_padded(self._compiled[key][1], inputs, self.batch_size)

    def _forward(self, images):
        return self.run(self.graph(images.shape[1:]), images)


def predict_padded(forward, inputs, batch_size):
    """``forward``'s output for at most ``batch_size`` rows of ``inputs`` (:func:`padded_batch`); float32 NumPy."""
    padded, count = padded_batch(np.asarray(inputs), batch_size)
    return np.asarray(forward(padded), dtype=np.float32)[:count]


def compiled_forward(model):
    """``inputs -> outputs`` of ``model`` in inference mode, compiled: :func:`features.engine.compiled_forward`."""
    from features.engine import compiled_forward as engine_forward
    from plumbing.backend import load_keras

    return engine_forward(load_keras(), model)


def padded_batch(inputs, batch_size):
    """``(inputs padded with zero rows, the number of real rows)``.

    Rows are padded to the next power of two, at most ``batch_size``: a
    compiled function is then traced for a handful of batch shapes only,
    and a short batch (two images for Grad-CAM) doesn't pay for a full one.
    """
    count = len(inputs)
    target = min(batch_size, 1 << max(count - 1, 0).bit_length())
    if count < target:
        inputs = np.concatenate([inputs, np.zeros((target - count,) + inputs.shape[1:], inputs.dtype)])
    return inputs, count


def pixel_model(estimator, *, name="pixel_rf", batch_size=256, metadata=None, **described):
    """A classifier on raw pixels (:func:`classifiers.pixels.pixel_matrix`): the pixel forest.

    Parameters
    ----------
    estimator : fitted classifier with ``predict_proba`` or ``decision_function``, trained on pixel matrices
    **described
        ``class_names``, ``image_shape``, ``record``: see :class:`ImageClassifier`.
    """
    from classifiers.pixels import pixel_matrix

    _check_fitted(estimator, name)
    score_function, kind = score_function_of(estimator, name)
    described_metadata = {"features": "pixels", "classifier": "rf", "backbone": "pixels", "random_weights": False, **(metadata or {})}
    return ImageClassifier(
        name, score_function, estimator.classes_, kind, transform=pixel_matrix, label_function=estimator.predict,
        batch_size=batch_size, metadata=described_metadata, **described,
    )  # fmt: skip


def feature_model(extractor, classifier, *, name, classes=None, conv_layer=None, metadata=None, **described):
    """A CNN feature extractor followed by a classifier on its rows.

    Parameters
    ----------
    extractor : features.engine.FeatureExtractor (or a :class:`SharedExtractor`), fitted
    classifier : fitted classifier
        A :class:`~classifiers.dense.DenseHead` or its saved ``keras.Model``
        (then pass ``classes``): one differentiable graph. Anything with
        ``predict_proba`` (``rf``, ...): probabilities. Anything with
        ``decision_function`` and no ``predict_proba`` (``svm``, a
        :class:`~classifiers.svm.FeatureSVM` or its saved pipeline):
        decision values. Only the Keras head is differentiable: Grad-CAM of
        a differentiable stand-in would explain another model.
    name : str
    classes : array-like or None
        The label of each output column; default: ``classifier.classes_``.
    conv_layer : str or None
        For the Keras head: the backbone layer Grad-CAM reads.
    **described
        ``class_names``, ``image_shape``, ``record``: see :class:`ImageClassifier`.
    """
    if not hasattr(extractor, "model_"):
        raise FeatpipeError("feature_model: the FeatureExtractor is not fitted; call fit() first")
    described_metadata = {**extractor_metadata(extractor), **(metadata or {})}
    keras_head = _keras_head(classifier)
    if keras_head is not None:
        classes = getattr(classifier, "classes_", None) if classes is None else classes
        if classes is None:
            raise FeatpipeError(f"{name}: a saved Keras head needs classes= (model.json's output_labels)")
        head = compiled_forward(keras_head)
        return KerasImageClassifier(
            name, lambda image_shape: _feature_head_graph(extractor, keras_head, image_shape), classes,
            conv_layer=conv_layer, batch_size=extractor.batch_size, metadata={"classifier": "dense", **described_metadata},
            score_function=lambda rows: np.asarray(head(rows)), transform=extractor.transform, **described,
        )  # fmt: skip
    estimator = getattr(classifier, "pipeline_", classifier)  # a FeatureSVM holds its pipeline
    _check_fitted(estimator, name)
    classes = estimator.classes_ if classes is None else classes
    score_function, kind = score_function_of(estimator, name)
    return ImageClassifier(
        name, score_function, classes, kind, transform=extractor.transform, label_function=estimator.predict,
        batch_size=extractor.batch_size, metadata=described_metadata, **described,
    )  # fmt: skip


def score_function_of(estimator, name):
    """``(estimator.predict_proba, "probability")``, or its ``decision_function`` and ``"decision value"``."""
    if hasattr(estimator, "predict_proba"):
        return estimator.predict_proba, "probability"
    if hasattr(estimator, "decision_function"):
        return estimator.decision_function, "decision value"
    raise FeatpipeError(f"{name}: expected a classifier with predict_proba or decision_function; got {type(estimator).__name__}")


class SharedExtractor:
    """A fitted :class:`~features.engine.FeatureExtractor` whose ``transform`` remembers its answers.

    Occlusion and LIME perturb the images the same way for every model (the
    same patches, the same seeded samples), so the classifiers on one
    feature file ask for the same rows: the backbone, by far the dearest
    part, runs once for all of them. Everything else is the extractor's.
    """

    def __init__(self, extractor):
        self._extractor = extractor
        self._rows = {}

    def __getattr__(self, name):
        return getattr(self._extractor, name)

    def transform(self, images):
        images = np.ascontiguousarray(images)
        key = (images.shape, hashlib.sha1(images).hexdigest())
        if key not in self._rows:
            self._rows[key] = self._extractor.transform(images)
        return self._rows[key]

    def forget(self):
        """Drop the remembered rows (a few MB per image explained)."""
        self._rows.clear()


def keras_image_model(model, classes, *, name, conv_layer=None, batch_size=32, metadata=None, device=None, **described):
    """A Keras CNN that takes the stored images itself and outputs class probabilities.

    Parameters
    ----------
    model : keras.Model
        Functional or Sequential; input (n, H, W, C) at the stored image
        size (uint8, or float32 0-255), output (n, n_classes) probabilities.
        Any resize and rescale must be inside it.
    classes : array-like of shape (n_classes,)
    name : str
    conv_layer : str or None
    device : str or None, where it runs (see :class:`KerasImageClassifier`)
    **described
        ``class_names``, ``image_shape``, ``record``: see :class:`ImageClassifier`.
    """
    expected = tuple(int(size) for size in model.inputs[0].shape[1:])

    def build_graph(image_shape):
        if tuple(image_shape) != expected:
            raise FeatpipeError(f"{name}: the model takes images of shape {expected}; got {tuple(image_shape)}")
        return model

    return KerasImageClassifier(
        name, build_graph, classes, conv_layer=conv_layer, batch_size=batch_size, metadata=metadata, device=device,
        **described,
    )


def _keras_head(classifier):
    """The Keras model of a dense head (fitted DenseHead or a loaded model), else ``None``."""
    from plumbing.backend import load_keras

    keras = load_keras()
    if isinstance(classifier, keras.Model):
        return classifier
    head = getattr(classifier, "model_", None)
    return head if isinstance(head, keras.Model) else None


def _feature_head_graph(extractor, head, image_shape):
    """uint8 images → the extractor's resize, rescale and backbone (``features.engine.assemble``) → head."""
    from features.engine import assemble
    from plumbing.backend import load_keras

    keras = load_keras()
    rows = assemble(keras, extractor.model_, extractor.backbone_, image_shape)
    images = keras.Input(shape=image_shape, dtype="uint8", name="images")
    return keras.Model(images, head(rows(images)), name=f"{rows.name}_{head.name}")


def extractor_metadata(extractor):
    """What output files say about a fitted extractor: backbone, layer, weights and their SHA-256."""
    return {
        "backbone": extractor.backbone_.name,
        "layer": extractor.layer_,
        "weights": extractor.weights_label_,
        "weights_sha256": extractor.weights_sha256_,
        "random_weights": extractor.weights_label_ == "none",
    }


def _check_fitted(estimator, what):
    if not hasattr(estimator, "classes_"):
        raise FeatpipeError(f"{what}: the classifier is not fitted (it has no classes_)")
