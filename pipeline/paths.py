"""Every path the pipeline reads or writes, named once.

Paths are relative to the project root (the folder holding ``params.yaml``
and ``dvc.yaml``), which is where DVC runs each stage.
"""

import typing
from pathlib import Path

PARAMS_FILE = Path("params.yaml")

DATA_DIR = Path("data")
PREPARED_DIR = DATA_DIR / "prepared"
IMAGE_STORE = PREPARED_DIR / "images.h5"
FEATURES_DIR = DATA_DIR / "features"
MODELS_DIR = DATA_DIR / "models"

REPORTS_DIR = Path("reports")
METRICS_DIR = REPORTS_DIR / "metrics"
PLOTS_DIR = REPORTS_DIR / "plots"
REPORT_FILE = REPORTS_DIR / "report.md"
ACCURACY_CHART = PLOTS_DIR / "accuracy.png"
CURVES_DIR = REPORTS_DIR / "curves"
CURVES_JSON = CURVES_DIR / "curves.json"
CURVES_CSV = CURVES_DIR / "curves.csv"
CURVES_PNG = CURVES_DIR / "curves.png"


TRAINING_PLOTS_DIR = PLOTS_DIR / "training"
EXPLANATIONS_DIR = REPORTS_DIR / "explanations"
DVCLIVE_DIR = REPORTS_DIR / "dvclive"


def explanation_files(name):
    """``reports/explanations/<name>.h5`` (the maps, for analysts) and ``.png`` (for eyes)."""
    return EXPLANATIONS_DIR / f"{name}.h5", EXPLANATIONS_DIR / f"{name}.png"


def training_log(name):
    """``reports/dvclive/<name>/``: DVCLive's files of a CNN's training (:mod:`classifiers.cnn.live`)."""
    return DVCLIVE_DIR / name


def training_png(name):
    """``reports/plots/training/<name>.png``: a CNN's loss and accuracy per epoch (``report`` draws it)."""
    return TRAINING_PLOTS_DIR / f"{name}.png"


def embedding_png(name):
    """``reports/curves/embedding-<name>.png``: the t-SNE of a feature file's (or ``pixels``) test rows."""
    return CURVES_DIR / f"embedding-{name}.png"


# Users' own Keras backbones (``extract.backbones`` entries with a ``file``) live here, in git:
# every extract stage depends on the folder, since dvc.yaml can't name a key only some entries have.
MODEL_FILES_DIR = Path("models")


# The naming rule, one for featpipe and dvc.yaml: a backbone goes by its ``name`` (a registry name,
# or the name an ``extract.backbones`` entry gives its model file), and every file made from it
# by that name and the layer: ``data/features/<name>-<layer>.h5``, ``data/models/<name>-<layer>-<classifier>/``.
# dvc.yaml spells the same paths from ``${item.name}`` and ``${item.layer}``.


def backbone_name(backbone):
    """The name files of ``backbone`` go by: a registry name as is, a ``.keras`` file's stem.

    For ``featpipe extract --backbone path/to/mine.keras`` outside DVC; an
    ``extract.backbones`` entry names its model file itself.
    """
    return Path(backbone).stem if str(backbone).endswith(".keras") else str(backbone)


def feature_file(name, layer):
    """``data/features/<name>-<layer>.h5``, ``name`` a backbone's (:func:`backbone_name`)."""
    return FEATURES_DIR / f"{name}-{layer}.h5"


def feature_name(path):
    """``vgg16-fc2`` for ``data/features/vgg16-fc2.h5``: the name models and metrics go by."""
    return Path(path).stem


def feature_files(backbones):
    """The feature file of each ``extract.backbones`` entry (each names its layer)."""
    return [feature_file(entry["name"], entry["layer"]) for entry in backbones]


# One trained model's files go by its name: ``<features>-<classifier>`` (``vgg16-fc2-rf``),
# ``pixel_rf`` for the baseline, ``scratch-cnn``, ``<backbone>-finetune``.
BASELINE_MODEL = "pixel_rf"
SCRATCH_MODEL = "scratch-cnn"


def model_name(feature_path, classifier):
    """``vgg16-fc2-rf`` for ``data/features/vgg16-fc2.h5`` and ``rf``."""
    return f"{feature_name(feature_path)}-{classifier}"


def finetuned_model(backbone):
    """``vgg16-finetune``: the name a fine-tuned registry backbone's files go by."""
    return f"{backbone}-finetune"


def model_file(name, suffix):
    """``data/models/<name>/model<suffix>``; ``model.json`` beside it says what it is."""
    return MODELS_DIR / name / f"model{suffix}"


def metrics_file(name):
    """``reports/metrics/<name>.json``."""
    return METRICS_DIR / f"{name}.json"


def confusion_files(name):
    """``reports/plots/<name>-confusion.csv`` (DVC confusion plot) and its ``.png``."""
    return PLOTS_DIR / f"{name}-confusion.csv", PLOTS_DIR / f"{name}-confusion.png"


class ModelFiles(typing.NamedTuple):
    """Every file of one model, as :func:`classifiers.records.write_model_outputs` writes them."""

    model: Path
    card: Path
    metrics: Path
    confusion_csv: Path
    confusion_png: Path


def model_files(name, suffix=".skops"):
    """The :class:`ModelFiles` of model ``name``; ``suffix`` is its model file's."""
    csv_path, png_path = confusion_files(name)
    model = model_file(name, suffix)
    return ModelFiles(model, model.with_name("model.json"), metrics_file(name), csv_path, png_path)
