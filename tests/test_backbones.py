"""The backbone registry, weights resolution and `featpipe backbones`, offline."""

from pathlib import Path

import numpy as np
import pytest

from features.backbones import PREPROCESSING_MODES, get_backbone, list_backbones
from plumbing.errors import FeatpipeError
from features.weights import RANDOM_WEIGHTS_WARNING, resolve_weights
from tests.conftest import uninitialised_weights

REQUIRED = {"vgg16", "vgg19", "resnet50", "mobilenet_v2", "efficientnet_b0", "inception_v3", "densenet121"}


@pytest.fixture(scope="module")
def keras():
    from plumbing.backend import load_keras

    return load_keras()


def test_registry_holds_every_required_backbone_with_complete_entries():
    assert REQUIRED <= set(list_backbones())
    assert list_backbones() == sorted(list_backbones())
    for name in list_backbones():
        entry = get_backbone(name)
        assert entry.preprocessing in PREPROCESSING_MODES, name
        assert entry.default_layer in entry.layers, name
        assert "avg_pool" in entry.layers, name
        assert entry.imagenet_file.endswith(".h5"), name
        assert entry.description, name
        assert all(tap.dim > 0 for tap in entry.layers.values()), name


def test_registry_states_the_published_sizes_and_preprocessing():
    assert get_backbone("inception_v3").input_size == (299, 299)
    assert get_backbone("vgg16").default_layer == "fc2"
    assert {name: tap.dim for name, tap in get_backbone("vgg16").layers.items()} == {"fc1": 4096, "fc2": 4096, "avg_pool": 512}
    modes = {name: get_backbone(name).preprocessing for name in REQUIRED}
    assert modes == {
        "vgg16": "caffe", "vgg19": "caffe", "resnet50": "caffe", "mobilenet_v2": "tf",
        "inception_v3": "tf", "densenet121": "torch", "efficientnet_b0": "builtin",
    }


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(FeatpipeError, match="unknown backbone 'vgg17'; expected one of: densenet121, .*vgg16, vgg19"):
        get_backbone("vgg17")


def test_unknown_layer_lists_the_offered_ones():
    with pytest.raises(FeatpipeError, match=r"no layer 'fc3'; expected one of: fc1 \(4096\), fc2 \(4096\), avg_pool \(512\)"):
        get_backbone("vgg16").resolve_layer("fc3")
    assert get_backbone("resnet50").resolve_layer(None) == "avg_pool"


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_backbone_builds_at_its_input_size_with_the_stated_dimensions(keras, name):
    from features.engine import truncate

    entry = get_backbone(name)
    with uninitialised_weights(keras):  # built, never run: only shapes are checked
        model = entry.build(keras, None)
        assert tuple(model.input_shape[1:]) == tuple(entry.input_size) + (3,)
        for layer, tap in entry.layers.items():
            truncated = truncate(keras, model, tap, "float32")
            assert tuple(truncated.output.shape) == (None, tap.dim), f"{name}/{layer}"


def test_weights_requests_are_checked_before_any_build(tmp_path):
    assert resolve_weights("none").is_random
    assert resolve_weights(None).is_random
    assert resolve_weights("imagenet").keras_argument == "imagenet"
    with pytest.raises(FeatpipeError, match="weights file not found: .*nope.h5; expected 'imagenet', 'none' or the path"):
        resolve_weights(str(tmp_path / "nope.h5"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(FeatpipeError, match="expected a Keras .weights.h5 or .h5 file"):
        resolve_weights(str(tmp_path / "weights.bin"))
    assert "not ImageNet features" in RANDOM_WEIGHTS_WARNING


def test_imagenet_offline_names_the_file_keras_wanted_and_where_it_goes(tmp_path):
    """What an air-gapped GPU box sees: an empty Keras cache and no network."""
    import subprocess
    import sys

    from tests.conftest import offline_keras_env

    code = (
        "from features.engine import FeatureExtractor\n"
        "from plumbing.errors import FeatpipeError\n"
        "try:\n"
        "    FeatureExtractor('mobilenet_v2', weights='imagenet').fit()\n"
        "except FeatpipeError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=offline_keras_env(tmp_path / "keras-home"),
        cwd=Path(__file__).resolve().parents[1],
    )
    message = result.stdout.strip().splitlines()[-1]  # after Keras' own "Downloading data from ..."
    assert result.returncode == 0 and message.startswith("ImageNet weights for mobilenet_v2"), result.stdout + result.stderr
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5" in message
    assert str(tmp_path / "keras-home" / "models") in message and "--weights PATH" in message


@pytest.mark.network
def test_imagenet_weights_download_and_hash(keras, tmp_path):
    from features.engine import FeatureExtractor
    from features.weights import keras_cache_dir
    from plumbing.hashing import file_sha256

    extractor = FeatureExtractor("mobilenet_v2", weights="imagenet", batch_size=2).fit()
    cached = keras_cache_dir() / get_backbone("mobilenet_v2").imagenet_file
    assert extractor.weights_sha256_ == file_sha256(cached)
    rows = extractor.transform(np.full((2, 32, 32, 3), 128, np.uint8))
    assert rows.shape == (2, 1280) and np.isfinite(rows).all()


def test_a_weights_file_that_does_not_fit_the_model_is_refused(keras, tmp_path):
    from features.engine import FeatureExtractor

    small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = tmp_path / "other.weights.h5"
    small.save_weights(path)
    with pytest.raises(FeatpipeError, match=f"cannot load {path} weights into mobilenet_v2"):
        FeatureExtractor("mobilenet_v2", weights=str(path)).fit()


def test_backbones_command_prints_every_entry(capsys):
    from pipeline.backbones import backbones
    from pipeline.cli import run

    with pytest.raises(SystemExit) as exited:
        import sys

        sys.exit(run(backbones, []))
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for name in REQUIRED:
        assert name in out
    assert "fc2 (4096), fc1 (4096), avg_pool (512)" in out
    assert "299x299" in out and "caffe" in out
    assert "vgg16_weights_tf_dim_ordering_tf_kernels.h5" in out
