"""Load ``params.yaml`` and check every key against the schema below.

A mistake ends with one line that names the key, what was expected and what
was found. Keys missing from the file take the schema's default, so a short
params file in a test or an experiment is enough; unknown keys are refused,
since a misspelt knob that silently does nothing is worse than an error.
"""

import copy
import math
import re
from pathlib import Path, PurePosixPath

import yaml

from pipeline import paths
from plumbing.errors import FeatpipeError


class Rule:
    """One key's expectation: a check, a description and a default."""

    def __init__(self, expected, check, default, nullable=False):
        self.expected = expected
        self.check = check
        self.default = default
        self.nullable = nullable

    def validate(self, key, value):
        if value is None and self.nullable:
            return None
        try:
            ok = self.check(value)
        except TypeError:
            ok = False
        if not ok:
            expected = self.expected + (" or null" if self.nullable else "")
            raise FeatpipeError(f"params: {key}: expected {expected}, got {value!r}")
        return value


def _is_int(value):
    # YAML's true/false load as bool, a subclass of int: never take them as numbers.
    return isinstance(value, int) and not isinstance(value, bool)


def integer(minimum=None, default=None, nullable=False, maximum=None):
    bounds = [f">= {minimum}"] if minimum is not None else []
    bounds += [f"<= {maximum}"] if maximum is not None else []
    expected = "an integer" + (" " + " and ".join(bounds) if bounds else "")
    return Rule(
        expected,
        lambda v: _is_int(v) and (minimum is None or v >= minimum) and (maximum is None or v <= maximum),
        default,
        nullable,
    )


def cores(default=-1):
    """joblib's ``n_jobs``: how many at once, -1 for every core (-2 all but one, and so on); 0 means nothing."""
    return Rule("an integer other than 0 (-1: every core)", lambda v: _is_int(v) and v != 0, default)


def number(low=None, high=None, default=None, nullable=False, high_inclusive=True):
    bounds = []
    if low is not None:
        bounds.append(f">= {low}")
    if high is not None:
        bounds.append(f"{'<=' if high_inclusive else '<'} {high}")
    expected = "a number" + (" " + " and ".join(bounds) if bounds else "")

    def check(v):
        if not (_is_int(v) or (isinstance(v, float) and math.isfinite(v))):  # NaN and infinity are no settings
            return False
        if low is not None and v < low:
            return False
        if high is not None and (v > high if high_inclusive else v >= high):
            return False
        return True

    return Rule(expected, check, default, nullable)


def choice(*options, default=None, nullable=False):
    return Rule(f"one of {', '.join(map(repr, options))}", lambda v: v in options, default, nullable)


def string(default=None, nullable=False):
    return Rule("a string", lambda v: isinstance(v, str) and v != "", default, nullable)


def boolean(default=False):
    return Rule("true or false", lambda v: isinstance(v, bool), default)


def list_of(item_check, expected, default, min_length=1):
    return Rule(
        f"a list of {expected} (at least {min_length})",
        lambda v: isinstance(v, list) and len(v) >= min_length and all(item_check(i) for i in v),
        default,
    )


# A name or layer goes into file names and DVC stage paths as is: letters, digits, '_', '-', '.'.
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ENTRY = "{name: ..., layer: ...}"


class BackboneEntries(Rule):
    """``extract.backbones``: ``{name, layer}`` entries, plus ``file`` for a user's own ``.keras`` model.

    ``name`` is the token every path is made of (:mod:`pipeline.paths`), in
    featpipe and in dvc.yaml alike, so it is a plain name: a registry name,
    or one the entry gives its model file, which lies under ``models/``.
    """

    def __init__(self, default):
        super().__init__(f"a list of {_ENTRY} entries (at least 1)", lambda v: isinstance(v, list) and v != [], default)

    def validate(self, key, value):
        super().validate(key, value)
        for index, entry in enumerate(value):
            _check_backbone_entry(f"{key}[{index}]", entry)
        _check_distinct_backbones(key, value)
        return value


def _check_backbone_entry(where, entry):
    if not isinstance(entry, dict) or not {"name", "layer"} <= set(entry) <= {"name", "layer", "file"}:
        raise FeatpipeError(
            f"params: {where}: expected {_ENTRY}, plus file: {paths.MODEL_FILES_DIR}/<file>.keras for a model "
            f"of your own, got {entry!r}"
        )
    name, layer = entry["name"], entry["layer"]
    if isinstance(name, str) and name.endswith(".keras"):
        stem = Path(name).stem
        raise FeatpipeError(
            f"params: {where}.name: expected a plain name, got the model file {name!r}; write a model file of your own "
            f"as {{name: {stem}, layer: {layer}, file: {paths.MODEL_FILES_DIR / Path(name).name}}}"
        )
    for field, text in (("name", name), ("layer", layer)):
        if not isinstance(text, str) or not _TOKEN.fullmatch(text):
            raise FeatpipeError(
                f"params: {where}.{field}: expected a plain name (letters, digits, '_', '-', '.'; it names the "
                f"feature file <name>-<layer>.h5), got {text!r}"
            )
    if "file" in entry and not _is_model_file_path(entry["file"]):
        raise FeatpipeError(
            f"params: {where}.file: expected a .keras file under {paths.MODEL_FILES_DIR}/ (the folder every extract "
            f"stage depends on, e.g. {paths.MODEL_FILES_DIR}/{name}.keras), got {entry['file']!r}"
        )


def _is_model_file_path(value):
    if not isinstance(value, str):
        return False
    path = PurePosixPath(value)
    return (not path.is_absolute() and ".." not in path.parts and len(path.parts) > 1
            and path.parts[0] == paths.MODEL_FILES_DIR.name and path.suffix == ".keras")


def _check_distinct_backbones(key, entries):
    """One name, one backbone; one feature file per entry."""
    first = {}
    for index, entry in enumerate(entries):
        name, layer = entry["name"], entry["layer"]
        if (name, layer) in first:
            raise FeatpipeError(f"params: {key}[{index}]: {name}-{layer} is already {key}[{first[name, layer]}]")
        for (other_name, _), other_index in first.items():
            other_file = entries[other_index].get("file")
            if other_name == name and other_file != entry.get("file"):
                raise FeatpipeError(
                    f"params: {key}[{index}].name: {name!r} names {other_file or 'a registry backbone'} in "
                    f"{key}[{other_index}] but {entry.get('file') or 'a registry backbone'} here; give each its own name"
                )
        first[name, layer] = index


def _is_positive_number(value):
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value) and value > 0


def grid_of(item_check, expected, default):
    """A non-empty list of candidate values a probe chooses from by cross-validation."""
    return Rule(f"a non-empty list of {expected}", lambda v: isinstance(v, list) and bool(v) and all(item_check(i) for i in v), default)


def _is_curve_size(value):
    return (_is_int(value) and value >= 1) or value == ALL_ROWS


def _is_grid(value):
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, list) and v for k, v in value.items())


def _dropout(default):
    return number(low=0.0, high=1.0, default=default, high_inclusive=False)


def _augment(default):
    return list_of(lambda v: isinstance(v, str), "augmentation names", default, min_length=0)


def library_default(rule):
    """``rule``, with null (and a key left out) meaning the library's default, which is defined there alone.

    For the scratch CNN's architecture (:data:`classifiers.cnn.scratch.ARCHITECTURE`):
    importing the library here would make every stage run (and depend on) the CNN code.
    """
    rule.nullable, rule.default = True, None
    return rule


def _image_training(epochs, batch_size, patience, dropout, augment):
    """The settings every CNN trained on the images has (``scratch``, ``finetune``), with its defaults."""
    return {
        "dropout": dropout,
        "augment": augment,
        "learning_rate": number(low=0.0, default=0.001),
        "lr_schedule": choice("plateau", "cosine", "constant", default="plateau"),
        "epochs": integer(minimum=1, default=epochs),
        "batch_size": integer(minimum=1, default=batch_size),
        "validation_fraction": number(low=0.0, high=1.0, default=0.1, high_inclusive=False),
        "min_validation_per_class": integer(minimum=0, default=20),
        "patience": integer(minimum=0, default=patience, nullable=True),
    }


# Landmark rows of the Nystroem approximation an RBF SVM uses past train.svm.max_rbf_samples rows.
NYSTROEM_COMPONENTS = 4000

# `curves.per_class` entry meaning the whole training split (one draw).
ALL_ROWS = "all"

# NumPy's and scikit-learn's seeds, and the HDF5 attribute featpipe stores them in, take 32 bits.
MAX_SEED = 2**32 - 1

SCHEMA = {
    "seed": integer(minimum=0, maximum=MAX_SEED, default=42),
    "data": {
        "source": choice("fashion_mnist", "cifar10", "folder", default="fashion_mnist"),
        "path": string(default=None, nullable=True),
        "train_size": integer(minimum=1, default=None, nullable=True),
        "test_size": integer(minimum=1, default=None, nullable=True),
        "image_size": integer(minimum=8, default=64),
        "test_fraction": number(low=0.0, high=1.0, default=0.2, high_inclusive=False),
        "max_bad_fraction": number(low=0.0, high=1.0, default=0.05),
        "workers": integer(minimum=1, default=None, nullable=True),
    },
    "extract": {
        "backbones": BackboneEntries([{"name": "vgg16", "layer": "fc2"}]),
        "weights": string(default="imagenet"),
        "batch_size": integer(minimum=1, default=32),
        "precision": choice("float32", "bfloat16", "mixed_float16", default="float32"),
        "device": string(default=None, nullable=True),
        "scheduler": string(default=None, nullable=True),
        "workers": integer(minimum=1, default=None, nullable=True),
        "shard_size": integer(minimum=1, default=1024),
        "io_threads": integer(minimum=1, default=None, nullable=True),
    },
    "baseline": {
        "n_estimators": integer(minimum=1, default=100),
        "criterion": choice("gini", "entropy", "log_loss", default="entropy"),
        "max_depth": integer(minimum=1, default=100, nullable=True),
        "n_jobs": cores(),
    },
    "train": {
        "classifiers": list_of(lambda v: isinstance(v, str), "classifier names", ["rf", "svm", "dense", "logreg", "knn"]),
        "scheduler": string(default=None, nullable=True),
        "rf": {
            "n_estimators": integer(minimum=1, default=200),
            "max_depth": integer(minimum=1, default=None, nullable=True),
            "max_features": Rule(
                "'sqrt', 'log2', a fraction in (0, 1] or null",
                lambda v: v in ("sqrt", "log2") or (isinstance(v, float) and 0 < v <= 1),
                "sqrt",
                nullable=True,
            ),
            "n_jobs": cores(),
        },
        "svm": {
            "kernel": choice("rbf", "linear", default="rbf"),
            "C": Rule("a positive number", _is_positive_number, 10.0),  # SVC refuses C = 0
            "gamma": Rule("'scale', 'auto' or a positive number", lambda v: v in ("scale", "auto") or _is_positive_number(v), "scale"),
            "pca_components": integer(minimum=1, default=None, nullable=True),
            "max_rbf_samples": integer(minimum=1, default=10000),
            "nystroem_components": integer(minimum=1, default=NYSTROEM_COMPONENTS),
            "n_jobs": cores(),
        },
        "logreg": {
            "C": grid_of(_is_positive_number, "positive numbers (inverse regularisation strengths)", [0.001, 0.01, 0.1, 1.0]),
            "cv": integer(minimum=2, default=3),
            "max_iter": integer(minimum=1, default=1000),
            "n_jobs": cores(),
        },
        "knn": {
            "k": grid_of(lambda v: _is_int(v) and v >= 1, "integers >= 1 (neighbours)", [1, 5, 10, 20, 50]),
            "cv": integer(minimum=2, default=3),
            "n_jobs": cores(),
        },
        "dense": {
            "hidden_units": list_of(lambda v: isinstance(v, int) and v > 0, "positive integers", [256], min_length=0),
            "dropout": number(low=0.0, high=1.0, default=0.5, high_inclusive=False),
            "batch_norm": boolean(default=True),
            "learning_rate": number(low=0.0, default=0.001),
            "epochs": integer(minimum=1, default=50),
            "batch_size": integer(minimum=1, default=64),
            "validation_fraction": number(low=0.0, high=1.0, default=0.1, high_inclusive=False),
            "min_validation_per_class": integer(minimum=0, default=20),
            "patience": integer(minimum=1, default=5),
        },
        "search": {
            "enabled": boolean(default=False),
            "cv": integer(minimum=2, default=3),
            "grids": Rule("a mapping of classifier to {param: [values]}", lambda v: isinstance(v, dict) and all(_is_grid(g) for g in v.values()), {}),
        },
    },
    "scratch": {  # the architecture's defaults are the library's: classifiers.cnn.scratch.ARCHITECTURE
        "filters": library_default(list_of(lambda v: _is_int(v) and v >= 1, "integers >= 1 (filters per conv block)", None)),
        "dense_units": library_default(integer(minimum=1)),
        "batch_norm": library_default(boolean()),
        "normalization": library_default(choice("rescale", "standardize", "none")),
        **_image_training(epochs=30, batch_size=64, patience=5, dropout=library_default(_dropout(None)),
                          augment=library_default(_augment(None))),
    },
    "finetune": {
        "backbones": list_of(lambda v: isinstance(v, str), "registry backbone names", [], min_length=0),
        "input_size": integer(minimum=32, default=None, nullable=True),
        "unfreeze": integer(minimum=0, default=1),
        "finetune_learning_rate": number(low=0.0, default=0.00001),
        "precision": choice("float32", "mixed_float16", "mixed_bfloat16", default="float32"),
        **_image_training(epochs=20, batch_size=32, patience=3, dropout=_dropout(0.3),
                          augment=_augment(["horizontal_flip", "shift", "zoom"])),
    },
    "explain": {
        "per_class": integer(minimum=1, default=2),
        "methods": list_of(lambda v: isinstance(v, str), "method names",
                           ["occlusion", "lime", "grad_cam", "guided_backprop", "guided_grad_cam"]),
        "occlusion": {
            "patch": integer(minimum=1, default=8),
            "stride": integer(minimum=1, default=4),
        },
        "lime": {
            "samples": integer(minimum=10, default=64),
            "segments": integer(minimum=2, default=16),
        },
        "seed": integer(minimum=0, maximum=MAX_SEED, default=None, nullable=True),
    },
    "curves": {
        "per_class": list_of(_is_curve_size, f"integers >= 1 or {ALL_ROWS!r}", [5, 10, 20, 50, 100, 200]),
        "repeats": integer(minimum=1, default=5),
        "cnn": boolean(default=True),
        "classifiers": Rule(
            "a list of classifier names or null", lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v), None,
            nullable=True,
        ),
    },
}


def defaults(schema=SCHEMA):
    """The params a missing ``params.yaml`` key stands for, as a nested dict."""
    return {
        key: defaults(rule) if isinstance(rule, dict) else copy.deepcopy(rule.default)
        for key, rule in schema.items()
    }


def validate(raw, schema=SCHEMA, prefix=""):
    """Return ``raw`` checked against ``schema``, with defaults filled in."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        where = prefix.rstrip(".") or "params.yaml"
        raise FeatpipeError(f"params: {where}: expected a mapping of keys, got {raw!r}")
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        known = ", ".join(prefix + key for key in schema)
        raise FeatpipeError(f"params: unknown key {prefix + unknown[0]!r}; expected one of: {known}")
    checked = {}
    for key, rule in schema.items():
        name = prefix + key
        if isinstance(rule, dict):
            checked[key] = validate(raw.get(key), rule, name + ".")
        elif key in raw:
            checked[key] = rule.validate(name, raw[key])
        else:
            checked[key] = copy.deepcopy(rule.default)
    return checked


def load_params(path="params.yaml"):
    """Read and validate a params file.

    A missing file is an error here; :func:`pipeline.stage.stage_params`
    decides when the defaults stand in for the project's ``params.yaml``.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise FeatpipeError(f"params file not found: {path} (run from the project root or pass --params)") from None
    except UnicodeDecodeError:
        raise FeatpipeError(f"params: {path} is not UTF-8 text (is it a params file?)") from None
    except OSError as error:
        raise FeatpipeError(f"cannot read params file {path}: {error.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise FeatpipeError(f"params: {path} is not valid YAML{where}") from None
    return validate(raw)


def override(params, section, **options):
    """Return a copy of ``params`` with the CLI options that were given set in ``section``.

    Options left as ``None`` keep the params value. Each given value is
    validated like a value from the file, so ``--batch-size 0`` fails the
    same way ``extract.batch_size: 0`` does.
    """
    updated = copy.deepcopy(params)
    target = updated
    for part in section.split("."):
        target = target[part]
    schema = SCHEMA
    for part in section.split("."):
        schema = schema[part]
    for key, value in options.items():
        if value is not None:
            target[key] = schema[key].validate(f"{section}.{key}", value)
    return updated
