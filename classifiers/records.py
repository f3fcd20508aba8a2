"""A trained model's record: one type for every kind of model, one writer, one reader.

Whatever a stage trains (the pixel forest, a classifier on CNN features, a
CNN from scratch, a fine-tuned backbone) it describes with a
:class:`ModelRecord` and writes with :func:`write_model_outputs`::

    data/models/<name>/model.<suffix>         the fitted model
    data/models/<name>/model.json             its card: what it is and what applying it needs (:func:`model_card`)
    reports/plots/<name>-confusion.csv        DVC confusion plot
    reports/plots/<name>-confusion.png
    reports/metrics/<name>.json               the record (written last: its presence means the rest is there)

``report``, ``curves`` and ``explain`` read records back with
:func:`read_record`, which refuses a file that is not one, so no stage needs
a special case per kind of model or spells a key by hand. The card,
``model.json``, is read back by :func:`read_card` (for
:func:`classifiers.load_model`), which refuses a card it can't trust in one
line: damaged, written by a newer featpipe, or older than
:data:`MODEL_FORMAT`.
"""

import dataclasses
import json
import math
import os
import re
import typing
from pathlib import Path

from plumbing.errors import FeatpipeError

# What a model takes as input, which decides how it is fed images (explain) and shown (report).
INPUTS = ("pixels", "features", "images")
# The version of model.json's layout that this code writes and reads; raised when a change
# means older code could no longer apply a new model (or this code an old one).
# 2: the card records the model file's SHA-256 (``model_sha256``), checked before the file is loaded.
MODEL_FORMAT = 2
CHANNEL_MODES = {1: "L", 3: "RGB"}  # Pillow's names: 8-bit grayscale, 8-bit colour


@dataclasses.dataclass
class ModelRecord:
    """A model's scores on the test split and where it came from.

    The fields are the metrics JSON's keys, in order. ``accuracy`` to
    ``n_features`` come from :func:`classifiers.evaluation.fit_and_evaluate`.

    Attributes
    ----------
    model : str
        The name its files go by: ``pixel_rf``, ``vgg16-fc2-rf``, ``scratch-cnn``...
    classifier : str
        What was fitted: a registry name (``rf``, ``svm``, ``dense``) or ``cnn``, ``finetune``.
    input : {"pixels", "features", "images"}
        Raw pixels in [0, 1]; rows of a feature file; the stored uint8 images.
    search : dict or None
        The grid search's summary when one ran.
    training : dict or None
        What a fit decided itself: epochs run, best epoch, the training curve.
    features : str
        What the model saw: ``pixels``, a feature file's name, or ``images``.
    feature_file, backbone, layer, weights : str or None
        The feature file and how its features were made (``weights`` is
        ``none`` for random weights, which ``random_weights`` also says).
    params : dict
        The settings it was built with.
    data : dict
        :func:`classifiers.evaluation.data_record` of the image store.
    """

    model: str
    classifier: str
    input: str
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    per_class: dict
    fit_seconds: float
    predict_seconds: float
    n_train: int
    n_test: int
    n_features: int
    features: str
    data: dict
    params: dict = dataclasses.field(default_factory=dict)
    seed: int = 0
    search: typing.Optional[dict] = None
    training: typing.Optional[dict] = None
    feature_file: typing.Optional[str] = None
    backbone: typing.Optional[str] = None
    layer: typing.Optional[str] = None
    weights: typing.Optional[str] = None
    random_weights: bool = False

    def to_json(self):
        """The metrics JSON's content: scores first, then where the model came from."""
        values = dataclasses.asdict(self)
        return {key: values[key] for key in JSON_ORDER}

    @classmethod
    def from_json(cls, data, where):
        """A record from a metrics JSON's content; ``where`` names the file in errors."""
        check_record(data, where)
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def summary_line(self, metrics_path):
        """The one line a stage prints for this model."""
        return f"{self.model}: accuracy {self.accuracy:.4f} (fit {self.fit_seconds:.1f} s) -> {metrics_path}"


JSON_ORDER = (
    "model", "classifier", "input", "accuracy", "balanced_accuracy", "macro_f1", "per_class", "fit_seconds",
    "predict_seconds", "n_train", "n_test", "n_features", "search", "training", "features", "feature_file",
    "backbone", "layer", "weights", "random_weights", "params", "seed", "data",
)  # fmt: skip

# The keys a reader relies on, with what each must hold.
_REQUIRED = {
    "model": (str,),
    "classifier": (str,),
    "input": (str,),
    "features": (str,),
    "accuracy": (int, float),
    "balanced_accuracy": (int, float),
    "macro_f1": (int, float),
    "per_class": (dict,),
    "fit_seconds": (int, float),
    "predict_seconds": (int, float),
    "n_train": (int,),
    "n_test": (int,),
    "n_features": (int,),
    "data": (dict,),
}


def check_record(data, where):
    """Refuse, in one line, content that is not a model record (a hand-edited or foreign file)."""
    if not isinstance(data, dict):
        raise FeatpipeError(f"{where}: expected a JSON object (a model record), got {type(data).__name__}; rerun its stage")
    for key, types in _REQUIRED.items():
        value = data.get(key)
        if not isinstance(value, types) or isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
            expected = " or ".join("a number" if t in (int, float) else f"a {t.__name__}" for t in types[:1])
            raise FeatpipeError(f"{where}: {key!r} must be {expected}, got {value!r}; rerun its stage")
    if data["input"] not in INPUTS:
        raise FeatpipeError(f"{where}: 'input' must be one of {', '.join(INPUTS)}, got {data['input']!r}; rerun its stage")
    if not 0 <= data["accuracy"] <= 1:
        raise FeatpipeError(f"{where}: 'accuracy' must be in [0, 1], got {data['accuracy']!r}; rerun its stage")


def write_model_outputs(
    record, files, *, y_true, y_pred, class_names, model=None, save=None, output_labels=None, image_shape=None,
    extractor=None,
):  # fmt: skip
    """Write a model's files: the model and its card, the confusion matrix, then the metrics JSON.

    Every folder is made first, so a folder that can't be made stops the
    stage before anything is written; the metrics JSON goes last, so its
    presence means the rest is there.

    Parameters
    ----------
    record : ModelRecord
    files : object with paths ``model``, ``card``, ``metrics``, ``confusion_csv``,
        ``confusion_png`` (``pipeline.paths.model_files`` names them)
    y_true, y_pred : ndarray of shape (n_test,), class indices
    class_names : list of str
    model : object or None
        The fitted model; ``None`` writes no model file (nor card).
    save : callable ``save(model, path)``
        Writes ``model`` to ``path`` atomically.
    output_labels : sequence of int or None
        The label behind each of the model's outputs (a softmax unit), by
        index into ``class_names``; default ``model.classes_``.
    image_shape : tuple of (height, width, channels)
        The image store's image shape; needed with ``model`` (see :func:`model_card`).
    extractor : dict or None
        For a model on features: how the features were made
        (:func:`storage.feature_store.extractor_settings` of the feature file).

    Returns
    -------
    str
        The line the stage prints.
    """
    from classifiers.evaluation import save_confusion, write_json

    folders = sorted({path.parent for path in files})
    for folder in folders:  # all checked before any is made: a failure leaves nothing behind
        check_can_create(folder)
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise FeatpipeError(f"cannot create output folder {folder}: {error.strerror}") from None
    if model is not None:
        labels = output_labels if output_labels is not None else model.classes_
        save(model, files.model)
        card = model_card(record, files.model, class_names, labels, image_shape, extractor)
        write_json(files.card, card)
    title = f"{record.model}: accuracy {record.accuracy:.3f}"
    save_confusion(files.confusion_csv, files.confusion_png, y_true, y_pred, class_names, title)
    write_json(files.metrics, record.to_json())
    return record.summary_line(files.metrics)


def model_card(record, model_file, class_names, output_labels, image_shape, extractor=None):
    """``model.json``'s content: the record, and everything applying the model to new images needs.

    Parameters
    ----------
    record : ModelRecord
    model_file : Path, the model file as saved (its name and SHA-256 go in the card)
    class_names : list of str
    output_labels : sequence of int, the class index behind each output column
    image_shape : tuple of (height, width, channels), the image store's image shape
    extractor : dict or None, for a model on features (see :func:`write_model_outputs`)

    Returns
    -------
    dict with ``model_format`` (:data:`MODEL_FORMAT`), ``featpipe_version``,
    ``model_file``, ``model_sha256``, ``class_names``, ``output_labels``, ``images``
    (``shape`` and ``channel_mode``: ``L`` or ``RGB``), ``extractor`` (features only)
    and the record's fields.
    """
    from plumbing.hashing import file_sha256
    from plumbing.versions import featpipe_version

    if image_shape is None or len(image_shape) != 3 or int(image_shape[-1]) not in CHANNEL_MODES:
        raise ValueError(f"image_shape must be (height, width, 1 or 3), got {image_shape!r}")
    if (record.input == "features") != (extractor is not None):
        raise ValueError(f"a model on {record.input} takes extractor settings only for features, got {extractor!r}")
    card = {
        "model_format": MODEL_FORMAT,
        "featpipe_version": featpipe_version(),
        "model_file": Path(model_file).name,
        "model_sha256": file_sha256(model_file),
        "class_names": list(class_names),
        "output_labels": [int(label) for label in output_labels],
        "images": {"shape": [int(size) for size in image_shape], "channel_mode": CHANNEL_MODES[int(image_shape[-1])]},
    }
    if extractor is not None:
        card["extractor"] = dict(extractor)
    return {**card, **record.to_json()}


def check_can_create(folder):
    """Refuse, in one line, a folder that can't be made: a file in the way, or no permission."""
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists() or parent == parent.parent)
    if not existing.is_dir():
        raise FeatpipeError(f"cannot create output folder {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FeatpipeError(f"cannot create output folder {folder}: no permission to write in {existing}")


def read_record(path, stage):
    """The :class:`ModelRecord` in metrics file ``path``; a missing file names the ``stage`` that writes it."""
    try:
        with open(path, "rb") as file:
            data = json.loads(file.read().decode("utf-8"))
    except FileNotFoundError:
        raise FeatpipeError(f"metrics file not found: {path} (run `featpipe {stage}` first)") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FeatpipeError(f"metrics file {path} is not valid JSON; rerun `featpipe {stage}`") from None
    return ModelRecord.from_json(data, f"metrics file {path}")


def training_stage(card):
    """The command that trains a model like the one ``card`` (a model.json's content) describes."""
    kind = card.get("input") if isinstance(card, dict) else None
    if kind == "images":
        return "finetune" if card.get("classifier") == "finetune" else "scratch"
    return {"pixels": "baseline", "features": "train"}.get(kind)


def read_card(folder):
    """The content of ``folder/model.json``, checked: the model folder's card, as :func:`model_card` wrote it.

    Raises
    ------
    FeatpipeError
        One line naming the problem: no such folder, no or damaged
        ``model.json``, a card from a newer featpipe (a higher
        ``model_format``), one from before :data:`MODEL_FORMAT`, or fields
        that are not what a card holds.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "not found"
        raise FeatpipeError(
            f"model folder {folder} {what}: expected data/models/<name>/ as `featpipe baseline`, `train`, "
            f"`scratch` or `finetune` writes it"
        )
    path = folder / "model.json"
    try:
        card = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise FeatpipeError(f"model folder {folder} is missing or incomplete: it has no model.json; retrain the model") from None
    except (UnicodeDecodeError, ValueError):
        raise FeatpipeError(f"{path} is not valid JSON (damaged?); {retrain_hint(None)}") from None
    except OSError as error:
        raise FeatpipeError(f"cannot read {path}: {error.strerror}") from None
    if not isinstance(card, dict):
        raise FeatpipeError(f"{path}: expected a JSON object (a model card), got {type(card).__name__}; {retrain_hint(None)}")
    _check_format(card, path)
    _check_card_fields(card, path)
    return card


def retrain_hint(card):
    """What to do about a model folder that can't be used: retrain it, with its stage when the card says which."""
    stage = training_stage(card)
    return f"retrain it with `featpipe {stage}`" if stage else "retrain it with the stage that made it"


def _check_format(card, path):
    from plumbing.versions import featpipe_version

    made_by = card.get("model_format")
    if made_by is None:
        raise FeatpipeError(
            f"{path} was written before featpipe's model format {MODEL_FORMAT} (it lacks what applying the model "
            f"needs: the image shape, the backbone's settings); {retrain_hint(card)}"
        )
    if isinstance(made_by, bool) or not isinstance(made_by, int) or made_by < 1:
        raise FeatpipeError(f"{path}: 'model_format' must be an integer >= 1, got {made_by!r}; {retrain_hint(card)}")
    if made_by < MODEL_FORMAT:
        raise FeatpipeError(
            f"{path} was written in model format {made_by}, before featpipe recorded the model file's SHA-256 "
            f"(format {MODEL_FORMAT}): nothing can tell whether the file is the one trained; {retrain_hint(card)}"
        )
    if made_by > MODEL_FORMAT:
        raise FeatpipeError(
            f"{path} was written by featpipe {card.get('featpipe_version', '(unknown)')} in model format {made_by}; "
            f"this featpipe ({featpipe_version()}) reads model format {MODEL_FORMAT} at most: upgrade featpipe"
        )


def _check_card_fields(card, path):
    check_record(card, f"{path}")
    problem = _card_problem(card)
    if problem:
        raise FeatpipeError(f"{path}: {problem}; {retrain_hint(card)}")


def _card_problem(card):
    """What is wrong with a card's own fields (not the record's), or ``None``."""
    images = card.get("images")
    shape = images.get("shape") if isinstance(images, dict) else None
    if not isinstance(card.get("model_file"), str) or "/" in card["model_file"] or not card["model_file"]:
        return f"'model_file' must be a file name, got {card.get('model_file')!r}"
    digest = card.get("model_sha256")
    if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        return f"'model_sha256' must be 64 hex digits (the model file's SHA-256), got {digest!r}"
    names = card.get("class_names")
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(name, str) for name in names):
        return f"'class_names' must be a list of two or more names, got {names!r}"
    labels = card.get("output_labels")
    if not isinstance(labels, list) or not labels or not all(_is_index(label, len(names)) for label in labels):
        return f"'output_labels' must list class indices 0..{len(names) - 1}, got {labels!r}"
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_index(size, 1 << 16) and size > 0 for size in shape)):
        return f"'images.shape' must be [height, width, channels], got {shape!r}"
    if shape[-1] not in CHANNEL_MODES or images.get("channel_mode") != CHANNEL_MODES[shape[-1]]:
        return f"'images.channel_mode' must be {CHANNEL_MODES.get(shape[-1], 'L or RGB')!r} for {shape[-1]} channel(s), got {images.get('channel_mode')!r}"
    if card["input"] == "features" and not isinstance(card.get("extractor"), dict):
        return f"'extractor' must say how the features were made, got {card.get('extractor')!r}"
    return None


def _is_index(value, count):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < count
