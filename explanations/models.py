"""Every trained model as the explanation methods see it.

An :class:`ExplainableModel` takes stored uint8 images (n, H, W, C) and
gives one score per class, batched. What the score is, is said, never
blurred: ``"probability"`` for models with ``predict_proba``, ``"decision
value"`` for the SVM (whose decision values are not probabilities). A
:class:`KerasExplainableModel` is also differentiable end to end, so the
gradient methods apply to it too.

Constructors, one per kind of model featpipe trains:

- :func:`pixel_forest_model`: the random forest on raw pixels;
- :func:`feature_model`: a :class:`~features.engine.FeatureExtractor`
  followed by ``rf``, ``svm`` or ``dense``; with ``dense`` it is one Keras
  graph, uint8 images → the extractor's own resize and rescale → backbone →
  head;
- :func:`keras_classifier_model`: a Keras CNN that takes the stored images
  and outputs class probabilities.
"""

import numpy as np

from plumbing.errors import FeatpipeError

SCORE_KINDS = ("probability", "decision value")


def check_images(images):
    """``images`` as an ndarray, refused unless uint8 of shape (n, height, width, 1 or 3)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise FeatpipeError(
            f"expected uint8 images of shape (n, height, width, 1 or 3) as the image store holds them; "
            f"got {images.dtype} of shape {images.shape}"
        )
    return images


class ExplainableModel:
    """A trained classifier as a black box: uint8 images in, a score per class out.

    Parameters
    ----------
    name : str
        The model's name in outputs, e.g. ``"vgg16-fc2-rf"``.
    score_function : callable
        ``score_function(images)``, images uint8 of shape (n, H, W, C), n at
        most ``batch_size``, returns an array of shape (n, n_classes) (or
        (n,) for a binary decision function: the score of ``classes[1]``).
    classes : array-like of shape (n_classes,)
        The label of each score column.
    score_kind : {"probability", "decision value"}
    batch_size : int
        Images per call of ``score_function``.
    metadata : dict or None
        What output files say about the model (backbone, layer, weights, ...).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    methods : tuple of str, the explanation methods that apply
    """

    methods = ("occlusion", "lime")

    def __init__(self, name, score_function, classes, score_kind="probability", *, batch_size=64, metadata=None):
        if score_kind not in SCORE_KINDS:
            raise ValueError(f"score_kind must be one of {SCORE_KINDS}; got {score_kind!r}")
        self.name = name
        self.classes_ = np.asarray(classes)
        self.score_kind = score_kind
        self.batch_size = int(batch_size)
        self.metadata = dict(metadata or {})
        self._score_function = score_function

    def scores(self, images):
        """Class scores of ``images``.

        Parameters
        ----------
        images : ndarray of shape (n_samples, height, width, channels), uint8

        Returns
        -------
        ndarray of shape (n_samples, n_classes), float32
        """
        images = check_images(images)
        parts = [self._score_batch(images[start : start + self.batch_size]) for start in range(0, len(images), self.batch_size)]
        return np.concatenate(parts) if parts else np.empty((0, len(self.classes_)), np.float32)

    def _score_batch(self, images):
        scores = np.asarray(self._score_function(images), dtype=np.float32)
        if scores.ndim == 1 and len(self.classes_) == 2:
            scores = np.stack([-scores, scores], axis=1)  # a binary decision function scores classes_[1]
        if scores.shape != (len(images), len(self.classes_)):
            raise ValueError(f"{self.name}: expected scores of shape {(len(images), len(self.classes_))}, got {scores.shape}")
        return scores

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


class KerasExplainableModel(ExplainableModel):
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
        The layer Grad-CAM reads; ``None``: the last convolutional block
        (:func:`explanations.graphs.last_conv_layer`).
    batch_size : int
    metadata : dict or None
    score_function : callable or None
        What :meth:`scores` runs instead of the graph: the same numbers by
        another route (a feature model scores through its extractor, whose
        rows other classifiers on the same features reuse).
    """

    methods = ExplainableModel.methods + ("grad_cam", "guided_backprop", "guided_grad_cam")

    def __init__(self, name, build_graph, classes, *, conv_layer=None, batch_size=32, metadata=None, score_function=None):
        super().__init__(name, score_function or self._forward, classes, "probability", batch_size=batch_size, metadata=metadata)
        self.conv_layer = conv_layer
        self._build_graph = build_graph
        self._graphs = {}
        self._gradient_graphs = {}
        self._compiled = {}  # id(keras model) -> (model, its compiled forward or gradient function)

    def graph(self, image_shape):
        """The Keras model for images of ``image_shape`` (built once per shape)."""
        image_shape = tuple(int(size) for size in image_shape)
        if image_shape not in self._graphs:
            self._graphs[image_shape] = self._build_graph(image_shape)
        return self._graphs[image_shape]

    def gradient_graphs(self, image_shape):
        """:class:`~explanations.graphs.GradientGraphs` for images of ``image_shape``."""
        from explanations.graphs import gradient_graphs

        image_shape = tuple(int(size) for size in image_shape)
        if image_shape not in self._gradient_graphs:
            self._gradient_graphs[image_shape] = gradient_graphs(self.graph(image_shape), self.conv_layer)
        return self._gradient_graphs[image_shape]

    def run(self, keras_model, inputs):
        """One of this model's Keras graphs on at most ``batch_size`` rows of ``inputs``; float32 NumPy.

        The forward pass is compiled once per graph (:func:`compiled_forward`);
        rows are padded as :func:`padded_batch` says, so it is traced for a
        few batch shapes only.
        """
        return predict_padded(self._compiled_once("forward", keras_model, compiled_forward), inputs, self.batch_size)

    def input_gradients(self, keras_model, inputs, columns):
        """:func:`explanations.gradients.input_gradients` through a gradient function compiled once per graph."""
        from explanations.gradients import gradient_function, input_gradients

        gradient = self._compiled_once("gradient", keras_model, gradient_function)
        return input_gradients(keras_model, inputs, columns, self.batch_size, gradient)

    def _compiled_once(self, kind, keras_model, compile_function):
        key = (kind, id(keras_model))
        if key not in self._compiled:
            self._compiled[key] = (keras_model, compile_function(keras_model))  # the model kept, so its id stays its own
        return self._compiled[key][1]

    def _forward(self, images):
        return self.run(self.graph(images.shape[1:]), images)


def predict_padded(forward, inputs, batch_size):
    """``forward``'s output for at most ``batch_size`` rows of ``inputs`` (:func:`padded_batch`); float32 NumPy."""
    padded, count = padded_batch(np.asarray(inputs), batch_size)
    return np.asarray(forward(padded), dtype=np.float32)[:count]


def compiled_forward(model):
    """``inputs -> outputs`` of ``model`` in inference mode, compiled: :func:`features.engine.compiled_forward`."""
    from plumbing.backend import load_keras
    from features.engine import compiled_forward as engine_forward

    return engine_forward(load_keras(), model)


def variable_values(model):
    """The current values of ``model``'s trainable and non-trainable variables, as two lists."""
    return [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables]


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


def pixel_forest_model(forest, *, name="pixel_rf", batch_size=256, metadata=None):
    """The random forest on raw pixels (:func:`classifiers.pixels.pixel_matrix`).

    Parameters
    ----------
    forest : fitted classifier with ``predict_proba``, trained on pixel matrices
    """
    from classifiers.pixels import pixel_matrix

    _check_fitted(forest, "the pixel forest")
    described = {"features": "pixels", "classifier": "rf", "backbone": "pixels", "random_weights": False, **(metadata or {})}
    return ExplainableModel(
        name, lambda images: forest.predict_proba(pixel_matrix(images)), forest.classes_,
        "probability", batch_size=batch_size, metadata=described,
    )


def feature_model(extractor, classifier, *, name, classes=None, conv_layer=None, metadata=None):
    """A CNN feature extractor followed by a shallow classifier.

    Parameters
    ----------
    extractor : features.engine.FeatureExtractor, fitted
    classifier : fitted classifier
        A :class:`~classifiers.dense.DenseHead` or its saved ``keras.Model``
        (then pass ``classes``): one differentiable graph, every method
        applies. Anything with ``predict_proba`` (``rf``): probabilities.
        Anything with ``decision_function`` and no ``predict_proba`` (``svm``,
        a :class:`~classifiers.svm.FeatureSVM` or its saved pipeline):
        decision values. Occlusion and LIME only for these two: Grad-CAM of
        a differentiable stand-in would explain another model.
    name : str
    classes : array-like or None
        The label of each output column; default: ``classifier.classes_``.
    conv_layer : str or None
        For the dense head: the backbone layer Grad-CAM reads.
    """
    if not hasattr(extractor, "model_"):
        raise FeatpipeError("feature_model: the FeatureExtractor is not fitted; call fit() first")
    described = {**_extractor_metadata(extractor), **(metadata or {})}
    keras_head = _keras_head(classifier)
    if keras_head is not None:
        classes = getattr(classifier, "classes_", None) if classes is None else classes
        if classes is None:
            raise FeatpipeError(f"{name}: a saved Keras head needs classes= (model.json's output_labels)")
        head = compiled_forward(keras_head)
        return KerasExplainableModel(
            name, lambda image_shape: _feature_head_graph(extractor, keras_head, image_shape), classes,
            conv_layer=conv_layer, batch_size=extractor.batch_size, metadata={"classifier": "dense", **described},
            score_function=lambda images: np.asarray(head(extractor.transform(images))),
        )
    estimator = getattr(classifier, "pipeline_", classifier)  # a FeatureSVM holds its pipeline
    _check_fitted(estimator, name)
    classes = estimator.classes_ if classes is None else classes
    if hasattr(estimator, "predict_proba"):
        function, kind = estimator.predict_proba, "probability"
    elif hasattr(estimator, "decision_function"):
        function, kind = estimator.decision_function, "decision value"
    else:
        raise FeatpipeError(f"{name}: expected a classifier with predict_proba or decision_function; got {type(classifier).__name__}")
    return ExplainableModel(
        name, lambda images: function(extractor.transform(images)), classes, kind,
        batch_size=extractor.batch_size, metadata=described,
    )


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
        import hashlib

        images = np.ascontiguousarray(images)
        key = (images.shape, hashlib.sha1(images).hexdigest())
        if key not in self._rows:
            self._rows[key] = self._extractor.transform(images)
        return self._rows[key]

    def forget(self):
        """Drop the remembered rows (a few MB per image explained)."""
        self._rows.clear()


def keras_classifier_model(model, classes, *, name, conv_layer=None, batch_size=32, metadata=None):
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
    """
    expected = tuple(int(size) for size in model.inputs[0].shape[1:])

    def build_graph(image_shape):
        if tuple(image_shape) != expected:
            raise FeatpipeError(f"{name}: the model takes images of shape {expected}; got {tuple(image_shape)}")
        return model

    return KerasExplainableModel(name, build_graph, classes, conv_layer=conv_layer, batch_size=batch_size, metadata=metadata)


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
    from plumbing.backend import load_keras
    from features.engine import assemble

    keras = load_keras()
    rows = assemble(keras, extractor.model_, extractor.backbone_, image_shape)
    images = keras.Input(shape=image_shape, dtype="uint8", name="images")
    return keras.Model(images, head(rows(images)), name=f"{rows.name}_{head.name}")


def _extractor_metadata(extractor):
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
