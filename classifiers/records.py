"""A trained model's record: one type for every kind of model, one writer, one reader.

Whatever a stage trains (the pixel forest, a classifier on CNN features, a
CNN from scratch, a fine-tuned backbone) it describes with a
:class:`ModelRecord` and writes with :func:`write_model_outputs`::

    data/models/<name>/model.<suffix>         the fitted model
    data/models/<name>/model.json             what it is: the record plus the model file and class names
    reports/plots/<name>-confusion.csv        DVC confusion plot
    reports/plots/<name>-confusion.png
    reports/metrics/<name>.json               the record (written last: its presence means the rest is there)

``report``, ``curves`` and ``explain`` read records back with
:func:`read_record`, which refuses a file that is not one, so no stage needs
a special case per kind of model or spells a key by hand.
"""

import dataclasses
import json
import math
import os
import typing

from plumbing.errors import FeatpipeError

# What a model takes as input, which decides how it is fed images (explain) and shown (report).
INPUTS = ("pixels", "features", "images")


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


def write_model_outputs(record, files, *, y_true, y_pred, class_names, model=None, save=None, output_labels=None):
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
        save(model, files.model)
        labels = output_labels if output_labels is not None else model.classes_
        card = {"model_file": files.model.name, "class_names": list(class_names),
                "output_labels": [int(label) for label in labels], **record.to_json()}
        write_json(files.card, card)
    title = f"{record.model}: accuracy {record.accuracy:.3f}"
    save_confusion(files.confusion_csv, files.confusion_png, y_true, y_pred, class_names, title)
    write_json(files.metrics, record.to_json())
    return record.summary_line(files.metrics)


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

