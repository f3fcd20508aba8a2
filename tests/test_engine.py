"""The extraction engine: featpipe's features equal a plain Keras reference, batching, threads."""

import pickle
import threading

import numpy as np
import pytest

from features.errors import FeatpipeError

RNG = np.random.default_rng(7)
GRAY = RNG.integers(0, 256, size=(3, 20, 20, 1), dtype=np.uint8)
RGB = RNG.integers(0, 256, size=(3, 24, 18, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def keras():
    from features.backend import load_keras

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
    from features.engine import FeatureExtractor, resolve_device

    assert resolve_device(keras, "/CPU:0") == "cpu:0"
    assert resolve_device(keras, None) is None
    # Also where the backend lists only its accelerators (Keras on JAX with a GPU).
    extractor = FeatureExtractor("mobilenet_v2", weights="none", batch_size=2, device="cpu:0").fit()
    assert extractor.transform(GRAY[:2]).shape == (2, 1280)


class FakeStore:
    """An image store of ``n`` one-pixel rows whose value is the row number (mod 256)."""

    def __init__(self, n, fail_at=None):
        self.n, self.fail_at, self.reads = n, fail_at, []

    def num_rows(self, split):
        return self.n

    def images(self, split, start, stop):
        self.reads.append((start, stop))
        if self.fail_at is not None and start <= self.fail_at < stop:
            raise OSError("disk gone")
        return (np.arange(start, stop) % 256).astype(np.uint8).reshape(-1, 1, 1, 1)


def test_image_batches_come_in_order_from_a_reader_thread():
    from features.engine import iter_image_batches

    store = FakeStore(300)
    batches = list(iter_image_batches(store, "train", start=5, stop=None, batch_size=64))
    assert [row for row, _ in batches] == [5, 69, 133, 197, 261]
    assert np.concatenate([images for _, images in batches]).ravel().tolist() == [row % 256 for row in range(5, 300)]
    assert store.reads == [(5, 261), (261, 300)]  # whole store chunks, cut into batches


def test_a_read_error_reaches_the_consumer_and_the_reader_stops():
    from features.engine import iter_image_batches

    before = threading.active_count()
    with pytest.raises(OSError, match="disk gone"):
        list(iter_image_batches(FakeStore(600, fail_at=300), "train", batch_size=32))
    batches = iter_image_batches(FakeStore(10_000), "train", batch_size=8, prefetch=2)
    next(batches)
    batches.close()  # a consumer that leaves early must not strand the reader
    assert threading.active_count() == before


class ListWriter:
    """The part of FeatureWriter that RowSink uses, keeping appends in a list."""

    def __init__(self, rows=10, per_chunk=4, fail=False):
        self.splits = {"train": (np.zeros(rows), None)}
        self.appended, self.per_chunk, self.fail = [], per_chunk, fail

    def rows_done(self, split):
        return 0

    def rows_per_chunk(self, split):
        return self.per_chunk

    def append(self, split, rows):
        if self.fail:
            raise OSError(28, "No space left on device")
        self.appended.append(rows.tolist())


def test_row_sink_writes_whole_chunks_in_order():
    from features.engine import RowSink

    writer = ListWriter(rows=10, per_chunk=4)
    sink = RowSink(writer)
    for start in range(0, 10, 3):  # batches of 3 rows: 0-2, 3-5, 6-8, 9
        sink.put("train", np.arange(start, min(start + 3, 10)))
    sink.close()
    assert sum(writer.appended, []) == list(range(10))
    assert all(len(rows) % 4 == 0 for rows in writer.appended[:-1])  # whole chunks (merged when the writer lags)


def test_row_sink_reports_write_errors_in_the_callers_thread():
    from features.engine import RowSink

    failing = RowSink(ListWriter(rows=100, per_chunk=1, fail=True), depth=1)
    with pytest.raises(OSError, match="No space left"):
        for i in range(100):
            failing.put("train", np.array([i]))
        failing.close()
