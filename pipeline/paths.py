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


def feature_file(backbone, layer):
    """``data/features/<backbone>-<layer>.h5``; a model file's stem stands for its name."""
    return FEATURES_DIR / f"{Path(backbone).stem if backbone.endswith('.keras') else backbone}-{layer}.h5"


def feature_name(path):
    """``vgg16-fc2`` for ``data/features/vgg16-fc2.h5``: the name models and metrics go by."""
    return Path(path).stem
