"""Fixtures shared across test modules: tiny data made in tmp_path, in milliseconds."""

import contextlib
import fcntl
import json
import os
import shutil
import socket
import types

import numpy as np
import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests start further processes (subprocesses, Dask workers) beside this one: on a GPU, JAX and
# TensorFlow would each give the first process most of its memory, and the next ones would fail.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")

from storage.feature_store import FeatureWriter  # noqa: E402
from storage.image_store import ImageSplit, ImageStore, write_image_store  # noqa: E402

CLASS_NAMES = ["circle", "square", "cross"]

# The longest tests first: with `pytest -n auto` each worker starts from the front of the list,
# so the end-to-end `dvc repro` runs (minutes each) begin at once instead of ending the run alone.
LONGEST_FIRST = ("tests/test_dvc_pipeline.py",)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST_FIRST))  # a stable sort: the rest keep their order


def built_once(tmp_path_factory, name, build):
    """The folder ``build(folder)`` fills, built once per test run and shared by every xdist worker.

    A module fixture is made once per worker that runs one of its tests; a
    project that costs half a minute to train is worth making once. The first
    worker to get here builds it under a file lock, the others wait and read
    it. Tests must not change it: they copy what they edit.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' base folders are siblings of one run's folder
    folder, done = root / name, root / f"{name}.built"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed part way
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def make_splits(n_train=12, n_test=6, size=16, channels=1, seed=0):
    """Random uint8 images with balanced labels, as an image store holds them."""
    rng = np.random.default_rng(seed)

    def split(n, prefix):
        images = rng.integers(0, 256, size=(n, size, size, channels), dtype=np.uint8)
        labels = np.arange(n) % len(CLASS_NAMES)
        return ImageSplit(images, labels, [f"{prefix}:{i}" for i in range(n)])

    return {"train": split(n_train, "tiny-train"), "test": split(n_test, "tiny-test")}


def separable_features(labels, seed, n_features=8):
    """Class-dependent features: a class's own coordinate is high, plus noise. float32 [N, D]."""
    rng = np.random.default_rng(seed)
    features = rng.normal(0.0, 0.6, size=(len(labels), n_features)).astype(np.float32)
    features[np.arange(len(labels)), labels] += 3.0
    return features


def offline_keras_env(keras_home):
    """Environment for a subprocess whose Keras has an empty cache at ``keras_home`` and no network.

    Keras fixes its home folder from ``KERAS_HOME`` when imported, and
    downloads with urllib, which honours the proxy variables: a proxy on a
    port nobody listens on makes every download fail at once, online or not.
    """
    closed = f"http://127.0.0.1:{free_port()}"
    env = {key: value for key, value in os.environ.items() if key.lower() != "no_proxy"}
    return {**env, "KERAS_HOME": str(keras_home), "http_proxy": closed, "https_proxy": closed,
            "HTTP_PROXY": closed, "HTTPS_PROXY": closed}


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def tiny_image_store(tmp_path):
    """A 12 + 6 image store of 16x16 grayscale images in 3 classes."""
    path = tmp_path / "data" / "prepared" / "images.h5"
    write_image_store(path, make_splits(), source="tiny", class_names=CLASS_NAMES, seed=0)
    return path


@pytest.fixture(scope="session")
def dask_cluster():
    """Two single-threaded Dask worker processes on 127.0.0.1, started once per test process (each xdist worker)."""
    import dask
    from distributed import LocalCluster

    # The cluster idles most of the run, and an idle worker's monitors (event-loop ticks every 20 ms, memory every
    # 100 ms, the profiler every 10 ms) took 1.9 s of CPU per 30 s each, its scheduler and nannies 2 s more: at these
    # intervals, 0.14 and 0.33 s. The nannies hand the config to the worker processes.
    quiet = {"distributed.admin.tick.interval": "1s", "distributed.admin.system-monitor.interval": "5s",
             "distributed.worker.memory.monitor-interval": "1s", "distributed.worker.profile.enabled": False}
    with dask.config.set(quiet):  # read when the cluster starts; the tests' own clusters keep Dask's defaults
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0")
    with cluster:
        yield cluster


@pytest.fixture(scope="session")
def warm_commands(tmp_path_factory):
    """A folder of `featpipe` and `dvc` executables run by a warm server (tests/warm_commands.py), one per test process."""
    from tests import warm_commands

    folder = tmp_path_factory.mktemp("warm")
    address = str(folder / "server")
    server = warm_commands.start(address)
    try:
        yield warm_commands.write_clients(folder / "bin", address)
    finally:
        server.kill()
        server.wait()


@pytest.fixture
def dask_scheduler(dask_cluster):
    """The address of :func:`dask_cluster`, once both its workers are up (a test may have killed one)."""
    from distributed import Client

    with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
    return dask_cluster.scheduler_address


@pytest.fixture
def in_tmp_project(tmp_path, monkeypatch):
    """Run a test from an empty project folder, as DVC runs a stage from the root."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- a project with an image store and a feature file, for the stages after extract ---

N_FEATURES = 8
FAST_PARAMS = {
    "seed": 7,
    "extract": {"backbones": [{"name": "vgg16", "layer": "fc2"}], "weights": "none"},
    "baseline": {"n_estimators": 10, "n_jobs": 1},
    "train": {
        "classifiers": ["rf", "svm", "dense"],
        "rf": {"n_estimators": 20, "n_jobs": 1},
        "svm": {"C": 1.0},
        # 1e-2: at the default 1e-3, 60 rows and 30 epochs are too few steps to learn from every initialisation.
        "dense": {"hidden_units": [16], "epochs": 30, "batch_size": 16, "patience": 5, "learning_rate": 1e-2},
    },
    # The CNN on the curves has tests of its own (tests/test_curves_cnn.py).
    "curves": {"cnn": False},
}


def write_feature_file(path, images, *, weights="none", transform=None, complete=True, **attrs):
    """A feature file for the image store at ``images``, as `featpipe extract` lays it out.

    ``transform(split, features, labels)`` may alter the rows (NaN, one class...);
    ``attrs`` override root attributes (another fingerprint, other class names).
    """
    with ImageStore(images) as store:
        splits = {split: (store.labels(split), store.ids(split)) for split in ("train", "test")}
        root = {
            "backbone": "vgg16", "layer": "fc2", "feature_dim": N_FEATURES, "input_size": 224,
            "preprocessing": "caffe", "weights": weights, "precision": "float32",
            "image_store_fingerprint": store.fingerprint, "class_names": store.class_names,
        }
    root.update(attrs)
    path.unlink(missing_ok=True)
    writer = FeatureWriter(path, attrs=root, splits=splits)
    for seed, (split, (labels, _)) in enumerate(splits.items()):
        rows = separable_features(labels, seed, N_FEATURES)
        if transform is not None:
            rows = transform(split, rows, labels)
        writer.append(split, rows)
    if complete:
        writer.finish()
    else:
        writer.close()
    return path


@pytest.fixture
def project(in_tmp_project):
    """A project folder: params.yaml, a 60 + 30 image store and a matching vgg16-fc2 feature file."""
    tmp_path = in_tmp_project
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(FAST_PARAMS))
    images = tmp_path / "data" / "prepared" / "images.h5"
    write_image_store(images, make_splits(n_train=60, n_test=30, size=8), source="tiny", class_names=CLASS_NAMES, seed=0)
    features = write_feature_file(tmp_path / "data" / "features" / "vgg16-fc2.h5", images)
    return types.SimpleNamespace(root=tmp_path, images=images, features=features)


def set_params(project, **sections):
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    for section, values in sections.items():
        params[section] = {**params.get(section, {}), **values}
    (project.root / "params.yaml").write_text(yaml.safe_dump(params))


# --- a project whose backbone is a tiny .keras file, run stage by stage in this process ---


def invoke_ok(*args):
    """Run ``featpipe ARGS`` here (not in a subprocess); its result, after checking it exited 0."""
    from click.testing import CliRunner

    from pipeline.cli import cli

    result = CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def tiny_backbone_project(root, params, *, dense, channels=1, n_train=24, n_test=12):
    """``root`` as a project: ``models/tiny.keras``, params.yaml and an image store of 16x16 images.

    The backbone: a 3x3 conv of 4 filters (``conv``), global average pooling,
    then a ReLU dense layer per ``dense`` entry (name: units), in order; a
    feature file can be taken from any of them.
    """
    from plumbing.backend import load_keras

    keras = load_keras()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, channels))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs))
    for name, units in dense.items():
        x = keras.layers.Dense(units, activation="relu", name=name)(x)
    (root / "models").mkdir()
    keras.Model(inputs, x).save(root / "models" / "tiny.keras")
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    splits = make_splits(n_train=n_train, n_test=n_test, channels=channels)
    write_image_store(root / "data/prepared/images.h5", splits, source="tiny", class_names=CLASS_NAMES, seed=0)
    return root


# --- model records as the training stages write them, for report tests ---

DATA = {"source": "fashion_mnist", "train_size": 2000, "test_size": 1000, "image_store_fingerprint": "abc"}


def record(model, accuracy, **fields):
    base = {
        "model": model, "classifier": model.rsplit("-", 1)[-1], "input": "features", "features": "vgg16-fc2", "accuracy": accuracy, "balanced_accuracy": accuracy,
        "macro_f1": accuracy - 0.01, "per_class": {"T-shirt/top": {}, "Trouser": {}}, "fit_seconds": 1.5,
        "predict_seconds": 0.25, "n_train": 2000, "n_test": 1000, "n_features": 4096, "backbone": "vgg16",
        "layer": "fc2", "weights": "imagenet", "random_weights": False, "data": dict(DATA),
    }
    return {**base, **fields}


BASELINE = record(
    "pixel_rf", 0.80, classifier="rf", input="pixels", features="pixels", backbone="pixels", layer=None, weights=None, n_features=784
)


def write_feature_model_metrics(project, classifiers=("rf", "svm", "dense")):
    """The metrics `report` reads of the pixel forest and of each classifier on vgg16-fc2 (accuracy 0.8)."""
    metrics = project.root / "reports" / "metrics"
    metrics.mkdir(parents=True, exist_ok=True)
    (metrics / "pixel_rf.json").write_text(json.dumps(BASELINE))
    for name in classifiers:
        (metrics / f"vgg16-fc2-{name}.json").write_text(json.dumps(record(f"vgg16-fc2-{name}", 0.8)))
    return metrics


# --- saved Keras models, loaded alone ---------------------------------------------------------


def probabilities_in_a_fresh_process(model_path, images, tmp_path, imports=""):
    """What ``keras.saving.load_model(model_path)`` predicts for ``images`` in a new Python process.

    Only Keras is imported there, plus ``imports`` (e.g. ``features.preprocessing``,
    which registers the resize-and-rescale layer a fine-tuned model holds).
    """
    import subprocess
    import sys
    from pathlib import Path

    np.save(tmp_path / "images.npy", images)
    script = (
        f"import sys, numpy as np, keras{', ' + imports if imports else ''}; folder = sys.argv[1]; "
        f"model = keras.saving.load_model({str(model_path)!r}); "
        "np.save(folder + '/loaded.npy', model.predict(np.load(folder + '/images.npy'), verbose=0))"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    return np.load(tmp_path / "loaded.npy")


@contextlib.contextmanager
def uninitialised_weights(keras):
    """Build models whose weights are never initialised, for checking shapes in a fraction of a second.

    Random initialisation is what a build costs: on JAX each weight shape
    compiles a kernel of its own (a minute for EfficientNetB0 on 2 cores).
    Keras would initialise the variables at the next stateless scope's end;
    ``clear_session`` forgets them first.
    """
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        keras.utils.clear_session()
