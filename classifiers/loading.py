"""Every row of the report, loaded from its folder: ``classifiers.load_model("data/models/<name>")``.

One function for every kind of model, driven by the folder's card
(``model.json``, checked by :func:`classifiers.records.read_card`) and its
model file, with no case per classifier name:

- ``input: pixels``: the model file (skops, any scikit-learn classifier) on
  pixel matrices;
- ``input: features``: the backbone rebuilt from the card's ``extractor``
  settings, those the feature file recorded (registry name or ``.keras``
  path, layer, weights, precision, seed), then the classifier: a skops
  scikit-learn estimator or a ``.keras`` head;
- ``input: images``: the ``.keras`` model on the stored images.

Weights are never swapped behind the user's back: the rebuilt backbone's
weights must have the SHA-256 the card recorded (random weights are drawn
again from their seed and hashed too), and so must the model file (checked
before it is loaded). No model file is unpickled: scikit-learn estimators
load from skops files, which build trusted types only
(:mod:`classifiers.model_files`), Keras files with ``safe_mode``. Anything
else ends in one line that says what is wrong
(:class:`~plumbing.errors.FeatpipeError`).
"""

import json
from pathlib import Path

import numpy as np

from classifiers.image_model import SharedExtractor, feature_model, keras_image_model, pixel_model
from classifiers.model_files import SUFFIX as SKOPS_SUFFIX, load_skops
from classifiers.records import ModelRecord, read_card, retrain_hint
from plumbing.errors import FeatpipeError, first_line

DEFAULT_BATCH_SIZES = {"pixels": 256, "features": 32, "images": 32}
# What rebuilding a backbone needs from the card's extractor settings.
REBUILD_KEYS = ("backbone", "layer", "weights", "weights_sha256", "precision")


class Backbones:
    """The fitted backbones of the feature models loaded through it: one per recorded extractor.

    Classifiers on one feature file share one backbone (built once, its
    weights checked once).

    Parameters
    ----------
    batch_size : int, images per forward pass
    device : str or None, e.g. ``"gpu:0"``; ``None`` lets the backend choose
    precision : str or None
        A Keras dtype policy to run the backbones in instead of the
        recorded one (:data:`features.engine.PRECISIONS`).
    remember_rows : bool
        Wrap each in a :class:`~classifiers.image_model.SharedExtractor`, so
        that models asking for the rows of the same images get them once
        (explanations perturb images alike for every model).
    """

    def __init__(self, batch_size=32, device=None, precision=None, remember_rows=False):
        self.batch_size, self.device, self.precision = batch_size, device, precision
        self.remember_rows = remember_rows
        self._fitted = {}

    def extractor(self, settings, where):
        """The fitted extractor that makes the features ``settings`` describe; ``where`` names the model in errors."""
        from features.engine import FeatureExtractor

        missing = [key for key in REBUILD_KEYS if key not in settings]
        if missing:
            raise FeatpipeError(
                f"{where}: the feature file it was trained on did not record the backbone's {', '.join(missing)}; "
                f"re-extract the features and retrain it"
            )
        key = json.dumps(settings, sort_keys=True, default=str)
        if key not in self._fitted:
            extractor = FeatureExtractor.from_settings(
                settings, batch_size=self.batch_size, device=self.device, precision=self.precision
            )
            try:
                extractor.fit()
            except FeatpipeError as error:
                raise FeatpipeError(f"{where} (backbone {settings['backbone']}): {error}") from None
            check_rebuilt(extractor, settings, where, precision_changed=extractor.precision != settings["precision"])
            self._fitted[key] = SharedExtractor(extractor) if self.remember_rows else extractor
        return self._fitted[key]


def check_rebuilt(extractor, settings, where, precision_changed=False):
    """Refuse a rebuilt backbone that would make other features than those the model was trained on."""
    from storage.feature_store import settings_mismatch

    now = extractor.settings()
    differs = settings_mismatch(settings, now, ignore=("precision",) if precision_changed else ())
    if differs is None:
        return
    if differs == "weights_sha256":
        hint = ""
        if precision_changed and settings["weights"] == "none":
            hint = f" (random weights drawn at precision {extractor.precision} differ from those drawn at {settings['precision']}: drop --precision)"
        raise FeatpipeError(
            f"{where}: the backbone's weights are not those the model was trained with: {settings['backbone']} "
            f"with weights {settings['weights']} has SHA-256 {now['weights_sha256'][:12]} now, the model recorded "
            f"{settings['weights_sha256'][:12]}{hint}; put those weights back, or re-extract the features and retrain"
        )
    raise FeatpipeError(
        f"{where}: the backbone no longer makes the features the model was trained on: its {differs} is "
        f"{now[differs]!r}, the model recorded {settings[differs]!r}; re-extract the features and retrain"
    )


def load_model(folder, *, batch_size=None, device=None, precision=None, backbones=None):
    """The model in ``folder`` (``data/models/<name>``) as an :class:`~classifiers.ImageClassifier`.

    Parameters
    ----------
    folder : path-like
        A model folder as ``featpipe baseline``, ``train``, ``scratch`` or
        ``finetune`` writes it (``model.json`` and the model file).
    batch_size : int or None
        Images per forward pass; ``None``: 256 for the pixel forest, 32 otherwise.
    device : str or None
        Where Keras computes, e.g. ``"gpu:0"``; ``None`` lets the backend choose.
    precision : str or None
        For a model on features: the backbone's Keras dtype policy instead
        of the one it was trained with. Other models run as saved and
        refuse it.
    backbones : Backbones or None
        Shares backbones between the feature models loaded through it (its
        batch size, device and precision then apply to them).

    Returns
    -------
    ImageClassifier
        ``predict``, ``predict_proba`` or ``decision_function``,
        ``classes_``, ``class_names``, ``image_shape`` and ``record`` (its
        :class:`~classifiers.records.ModelRecord`). It takes uint8 images of
        ``image_shape``, the image store's.

    Raises
    ------
    FeatpipeError
        A missing or damaged folder, a card from a newer featpipe or from
        before this format, a model file that doesn't load, other weights
        than those recorded, a precision for a model that has no backbone to rebuild.
    """
    folder = Path(folder)
    card = read_card(folder)
    if device is not None:
        from plumbing.backend import load_keras, resolve_device

        device = resolve_device(load_keras(), device)
    record = ModelRecord.from_json(card, f"{folder}/model.json")
    model_path = folder / card["model_file"]
    if not model_path.is_file():
        raise FeatpipeError(f"model folder {folder} is incomplete: {card['model_file']} is missing; {retrain_hint(card)}")
    _check_model_file(model_path, card)
    if precision is not None and record.input != "features":
        raise FeatpipeError(
            f"--precision applies to a feature model's backbone (rebuilt at that precision); {record.model} is a model "
            f"on {record.input} and runs in the dtypes it was saved with"
        )
    described = {"name": record.model, "class_names": card["class_names"], "image_shape": tuple(card["images"]["shape"]),
                 "record": record}
    metadata = {"features": record.features, "classifier": record.classifier}
    size = batch_size or DEFAULT_BATCH_SIZES[record.input]
    if record.input == "pixels":
        estimator = _fitted_estimator(model_path, card, int(np.prod(card["images"]["shape"])))
        return pixel_model(estimator, batch_size=size, metadata=metadata, **described)
    if record.input == "features":
        backbones = backbones or Backbones(size, device, precision)
        extractor = backbones.extractor(card["extractor"], folder)
        classifier = _fitted_estimator(model_path, card, int(extractor.feature_dim_))
        return feature_model(extractor, classifier, classes=card["output_labels"], metadata=metadata, **described)
    network = _keras_network(model_path, card, tuple(card["images"]["shape"]), device)
    metadata.update(backbone=record.backbone, weights=record.weights, random_weights=record.random_weights)
    return keras_image_model(network, card["output_labels"], batch_size=size, metadata=metadata, device=device, **described)


def _check_model_file(path, card):
    """Refuse a model file whose bytes are not those trained (model.json's ``model_sha256``), before it is loaded."""
    from plumbing.hashing import file_sha256

    if file_sha256(path) != card["model_sha256"]:
        raise FeatpipeError(
            f"{path} is not the file that was trained: its SHA-256 differs from the one model.json records "
            f"(changed or damaged after training); {retrain_hint(card)}"
        )


def _load_file(path, card, device=None):
    """What ``path`` holds: a scikit-learn estimator (skops) or a Keras model, by its suffix; never a pickle."""
    if path.suffix == ".joblib":
        raise FeatpipeError(
            f"{path} is a pickle, which featpipe does not load (loading one can run any code in it); "
            f"{retrain_hint(card)} (it then writes model.skops)"
        )
    try:
        if path.suffix == SKOPS_SUFFIX:
            return load_skops(path)
        if path.suffix == ".keras":
            from classifiers.cnn.training import load_keras_model
            from plumbing.backend import device_scope, load_keras

            with device_scope(load_keras(), device):
                return load_keras_model(path)
    except FeatpipeError:
        raise
    except Exception as error:  # skops and Keras raise many kinds for a damaged file
        raise FeatpipeError(f"cannot load {path}: {type(error).__name__}: {first_line(error)}; {retrain_hint(card)}") from None
    raise FeatpipeError(f"{path}: expected a .skops or .keras model file, got {path.suffix or 'no suffix'!r}; {retrain_hint(card)}")


def _fitted_estimator(path, card, n_features):
    """The classifier in ``path`` (scikit-learn estimator or Keras head), checked against the card: classes and input width."""
    from plumbing.backend import load_keras

    estimator = _load_file(path, card)
    labels = card["output_labels"]
    if path.suffix == ".keras":
        keras = load_keras()
        shapes = (tuple(estimator.inputs[0].shape[1:]), int(estimator.outputs[0].shape[-1])) if isinstance(estimator, keras.Model) else None
        if shapes != ((n_features,), len(labels)):
            raise FeatpipeError(
                f"{path}: expected a Keras head from {n_features} features to {len(labels)} classes, got "
                f"{shapes or type(estimator).__name__}; {retrain_hint(card)}"
            )
        return estimator
    classes = getattr(estimator, "classes_", None)
    if classes is None or not hasattr(estimator, "predict") or np.asarray(classes).tolist() != labels:
        found = "no fitted classifier" if classes is None else f"classes {np.asarray(classes).tolist()}"
        raise FeatpipeError(f"{path} holds {found}, model.json says classes {labels}; {retrain_hint(card)}")
    width = getattr(estimator, "n_features_in_", n_features)
    if width != n_features:
        raise FeatpipeError(f"{path} takes {width} features per image, its input gives {n_features}; {retrain_hint(card)}")
    return estimator


def _keras_network(path, card, image_shape, device):
    """The Keras CNN in ``path``, checked to take ``image_shape`` images and give one output per class."""
    from plumbing.backend import load_keras

    network = _load_file(path, card, device)
    keras = load_keras()
    shapes = (tuple(network.inputs[0].shape[1:]), int(network.outputs[0].shape[-1])) if isinstance(network, keras.Model) else None
    if shapes != (image_shape, len(card["output_labels"])):
        raise FeatpipeError(
            f"{path}: expected a Keras model from {'x'.join(map(str, image_shape))} images to "
            f"{len(card['output_labels'])} classes, got {shapes or type(network).__name__}; {retrain_hint(card)}"
        )
    return network
