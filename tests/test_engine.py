"""The extraction engine: featpipe's features equal a plain Keras reference, batching, threads."""

import pickle

import numpy as np
import pytest

from plumbing.errors import FeatpipeError

RNG = np.random.default_rng(7)
GRAY = RNG.integers(0, 256, size=(3, 20, 20, 1), dtype=np.uint8)
RGB = RNG.integers(0, 256, size=(3, 24, 18, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def keras():
    from plumbing.backend import load_keras

    return load_keras()


@pytest.fixture(scope="module")
def mobilenet_application(keras):
    """A full MobileNetV2 with seeded random weights: the "same weights" of every comparison."""
    keras.utils.set_random_seed(3)
    return keras.applications.MobileNetV2(weights=None)


@pytest.fixture(scope="module")
def mobilenet_weights(mobilenet_application, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2.weights.h5"
    mobilenet_application.save_weights(path)
    return path


@pytest.fixture(scope="module")
def mobilenet(mobilenet_weights):
    """A fitted MobileNetV2 extractor, shared by the module."""
    from features.engine import FeatureExtractor

    return FeatureExtractor("mobilenet_v2", weights=str(mobilenet_weights), batch_size=4).fit()


def reference_features(keras, application, module, layer, images, pool=False):
    """The plain Keras way: resize, the module's preprocess_input (NumPy path), Model(inputs, layer.output)."""
    height, width = application.input_shape[1:3]
    x = images.astype("float32")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    x = keras.ops.convert_to_numpy(keras.layers.Resizing(height, width, interpolation="bilinear")(x))
    x = module.preprocess_input(x)
    output = application.get_layer(layer).output
    if pool:
        output = keras.layers.GlobalAveragePooling2D()(output)
    return keras.Model(application.input, output).predict(x, verbose=0)


def assert_close(features, reference):
    scale = float(np.abs(reference).max())
    np.testing.assert_allclose(features, reference, rtol=1e-4, atol=1e-5 * scale)


def test_vgg16_fc2_equals_the_plain_keras_reference_for_the_same_weights(keras):
    """caffe mode: RGB->BGR and the ImageNet means subtracted, on non-square RGB images."""
    from features.engine import FeatureExtractor

    extractor = FeatureExtractor("vgg16", weights="none", batch_size=3, seed=1).fit()
    assert extractor.layer_ == "fc2" and extractor.feature_dim_ == 4096
    # The extractor's backbone layers are the Keras application's, weights and all.
    reference = reference_features(keras, extractor.model_, keras.applications.vgg16, "fc2", RGB)
    assert_close(extractor.transform(RGB), reference)


def test_mobilenet_v2_equals_the_reference_on_grayscale_images_from_a_legacy_h5_file(
    keras, tmp_path, mobilenet_application, mobilenet
):
    """tf mode ([-1, 1]), gray repeated to RGB, pooled output, both weights file formats."""
    import h5py

    from features.engine import FeatureExtractor

    # The applications' ImageNet files hold the legacy weights group at their root:
    # Keras' own legacy full-model file, with that group moved up.
    full = tmp_path / "mobilenet_v2_full.h5"
    mobilenet_application.save(full)
    path = tmp_path / "mobilenet_v2.h5"
    with h5py.File(full, "r") as source, h5py.File(path, "w") as file:
        weights = source["model_weights"]
        for name in weights:
            source.copy(weights[name], file, name)
        file.attrs.update(weights.attrs)
    extractor = FeatureExtractor("mobilenet_v2", weights=str(path), batch_size=2).fit()
    reference = reference_features(keras, mobilenet_application, keras.applications.mobilenet_v2, "out_relu", GRAY, pool=True)
    assert_close(extractor.transform(GRAY), reference)
    assert_close(mobilenet.transform(GRAY), reference)


def test_transform_pads_the_last_batch_and_drops_the_padding(mobilenet):
    five = np.concatenate([GRAY, GRAY[:2]])
    rows = mobilenet.transform(five)  # batches of 4 + 1 (padded to 4)
    assert rows.shape == (5, 1280) and rows.dtype == np.float32
    np.testing.assert_allclose(rows[3:], rows[:2], rtol=1e-5, atol=1e-7)
    assert mobilenet.transform(GRAY[:0]).shape == (0, 1280)


def test_transform_refuses_what_is_not_uint8_images(mobilenet):
    with pytest.raises(ValueError, match=r"X must be uint8 of shape \(n_samples, height, width, 1\|3\); got float64"):
        mobilenet.transform(GRAY.astype(float))


def test_unfitted_extractor_pickles_and_says_it_is_not_fitted(mobilenet):
    from features.engine import FeatureExtractor

    copy = pickle.loads(pickle.dumps(FeatureExtractor("vgg16", layer="fc1", batch_size=8)))
    assert copy.get_params()["layer"] == "fc1"
    with pytest.raises(RuntimeError, match="not fitted"):
        copy.transform(GRAY)
    shipped = pickle.loads(pickle.dumps(mobilenet))  # the model stays behind; a worker fits again
    assert shipped.get_params() == mobilenet.get_params() and not hasattr(shipped, "model_")


def test_bfloat16_gives_float32_rows_close_to_float32_for_the_same_weights(mobilenet, mobilenet_weights):
    from features.engine import FeatureExtractor

    reduced = FeatureExtractor("mobilenet_v2", weights=str(mobilenet_weights), batch_size=4, precision="bfloat16").fit()
    assert reduced.model_.weights[0].dtype == "bfloat16"
    rows, exact = reduced.transform(GRAY), mobilenet.transform(GRAY)
    assert rows.dtype == np.float32
    cosine = (rows * exact).sum(1) / np.linalg.norm(rows, axis=1) / np.linalg.norm(exact, axis=1)
    assert cosine.min() > 0.99, cosine


def test_mixed_float16_computes_in_float16_and_stores_float32(mobilenet_weights):
    from features.engine import FeatureExtractor

    mixed = FeatureExtractor("mobilenet_v2", weights=str(mobilenet_weights), batch_size=2, precision="mixed_float16").fit()
    assert mixed.model_.layers[1].compute_dtype == "float16" and mixed.model_.weights[0].dtype == "float32"
    assert mixed.transform(GRAY[:2]).dtype == np.float32


def test_bad_params_and_devices_are_user_errors():
    from features.engine import FeatureExtractor

    with pytest.raises(FeatpipeError, match="unknown precision 'float8'; expected one of: float32, bfloat16, mixed_float16"):
        FeatureExtractor("mobilenet_v2", precision="float8").fit()
    with pytest.raises(FeatpipeError, match=r"^unknown device 'gpu:7'; this machine has: cpu:0(, gpu:\d+)*$"):
        FeatureExtractor("mobilenet_v2", weights="none", device="gpu:7").fit()


def test_an_explicit_cpu_device_is_accepted_and_used(keras):
    from features.engine import FeatureExtractor
    from plumbing.backend import resolve_device

    assert resolve_device(keras, "/CPU:0") == "cpu:0"
    assert resolve_device(keras, None) is None
    # Also where the backend lists only its accelerators (Keras on JAX with a GPU).
    extractor = FeatureExtractor("mobilenet_v2", weights="none", batch_size=2, device="cpu:0").fit()
    assert extractor.transform(GRAY[:2]).shape == (2, 1280)


def test_on_jax_compilations_are_kept_in_the_keras_home_for_the_next_process(tmp_path):
    """A rerun or a Dask worker then builds and starts without compiling again."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("jax")  # the cache is JAX's: TensorFlow and torch have no such thing to turn on
    code = "from plumbing.backend import load_keras; keras = load_keras(); print(keras.random.uniform((2, 3)).shape)"
    env = {name: value for name, value in os.environ.items() if not name.startswith("JAX_")}
    env.update(KERAS_BACKEND="jax", KERAS_HOME=str(tmp_path / "home"))

    def run(**extra):
        done = subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1])
        assert done.returncode == 0, done.stderr

    run()
    assert any((tmp_path / "home" / "jax_cache").iterdir())
    run(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "chosen"))  # a folder the user chose is used instead
    assert any((tmp_path / "chosen").iterdir())


def test_images_at_the_input_size_skip_the_resize_and_get_the_same_numbers(keras):
    from features.preprocessing import ResizeAndRescale

    images = RNG.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    resized = keras.ops.convert_to_numpy(keras.layers.Resizing(32, 32, interpolation="bilinear")(images.astype("float32")))
    expected = keras.applications.vgg16.preprocess_input(resized)
    got = keras.ops.convert_to_numpy(ResizeAndRescale((32, 32), 3, 3, "caffe")(images))
    np.testing.assert_array_equal(got, expected)
