"""Every path the pipeline reads or writes, named once.

Paths are relative to the project root (the folder holding ``params.yaml``
and ``dvc.yaml``), which is where DVC runs each stage.
"""

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
BASELINE_METRICS = METRICS_DIR / "pixel_rf.json"
ACCURACY_CHART = PLOTS_DIR / "accuracy.png"


def feature_file(backbone, layer):
    """``data/features/<backbone>-<layer>.h5``; a model file's stem stands for its name."""
    return FEATURES_DIR / f"{Path(backbone).stem if backbone.endswith('.keras') else backbone}-{layer}.h5"


def feature_name(path):
    """``vgg16-fc2`` for ``data/features/vgg16-fc2.h5``: the name models and metrics go by."""
    return Path(path).stem


def feature_files(backbones):
    """The feature file of each ``extract.backbones`` entry, a missing layer resolved as extract does."""
    from features.backbones import get_backbone, is_model_file
    from features.errors import FeatpipeError

    files = []
    for entry in backbones:
        layer = entry.get("layer")
        if layer is None and is_model_file(entry["name"]):
            raise FeatpipeError(f"extract.backbones: {entry['name']} is a model file and needs a layer")
        files.append(feature_file(entry["name"], layer or get_backbone(entry["name"]).resolve_layer(None)))
    return files


# One trained model's files go by its name: ``<features>-<classifier>`` (``vgg16-fc2-rf``),
# or ``pixel_rf`` for the baseline.


def model_name(feature_path, classifier):
    """``vgg16-fc2-rf`` for ``data/features/vgg16-fc2.h5`` and ``rf``."""
    return f"{feature_name(feature_path)}-{classifier}"


def model_file(name, suffix):
    """``data/models/<name>/model<suffix>``; ``model.json`` beside it says what it is."""
    return MODELS_DIR / name / f"model{suffix}"


def metrics_file(name):
    """``reports/metrics/<name>.json``."""
    return METRICS_DIR / f"{name}.json"


def confusion_files(name):
    """``reports/plots/<name>-confusion.csv`` (DVC confusion plot) and its ``.png``."""
    return PLOTS_DIR / f"{name}-confusion.csv", PLOTS_DIR / f"{name}-confusion.png"

