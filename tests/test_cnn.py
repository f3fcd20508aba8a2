"""The scratch CNN and the training loop it shares with fine-tuning, on tiny images."""

import math

import numpy as np
import pytest

from classifiers.cnn.scratch import build_scratch_cnn, fit_scratch_cnn
from classifiers.cnn.training import (
    AUGMENTATIONS,
    PLATEAU_FACTOR,
    PLATEAU_PATIENCE,
    TrainingSettings,
    fit_with_early_stopping,
    predict_probabilities,
    save_model,
)
from plumbing.errors import FeatpipeError
from tests.conftest import probabilities_in_a_fresh_process

N_CLASSES = 3
# A model small enough to fit in a second or two.
TINY = {"filters": (4,), "dense_units": 8}


@pytest.fixture(scope="module")
def keras():
    from plumbing.backend import load_keras

    return load_keras()


def striped_images(n, size=8, seed=0):
    """uint8 [n, size, size, 1] images whose bright row band says the class, plus noise; labels [n]."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % N_CLASSES
    images = rng.integers(0, 60, size=(n, size, size, 1), dtype=np.uint8)
    band = size // N_CLASSES
    for index, label in enumerate(labels):
        images[index, label * band : (label + 1) * band] += 180
    return images, labels


def test_the_same_seed_gives_the_same_model_and_another_seed_another():
    images, labels = striped_images(24)
    fits = [fit_scratch_cnn(images, labels, N_CLASSES, **TINY, epochs=2, seed=seed)[0] for seed in (5, 5, 6)]
    same, again, other = (model.get_weights() for model in fits)
    for first, second in zip(same, again):
        np.testing.assert_array_equal(first, second)
    assert any(not np.array_equal(first, second) for first, second in zip(same, other))


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch():
    images, labels = striped_images(30)
    # Validation labels contradict the training ones: the better the fit, the higher the validation loss.
    contradicting = (images, (labels + 1) % N_CLASSES)
    model = build_scratch_cnn(images.shape[1:], N_CLASSES, **TINY, batch_norm=False, dropout=0.0, augment=())
    settings = TrainingSettings(learning_rate=0.01, lr_schedule="constant", epochs=30, batch_size=10, patience=3)
    history = fit_with_early_stopping(model, images, labels, contradicting, settings)

    assert history.monitor == "val_loss"
    assert history.epochs_run == history.best_epoch + 3 < 30
    val_loss = history.curve["val_loss"]
    assert history.best_epoch == int(np.argmin(val_loss)) + 1 and val_loss[-1] > min(val_loss) + 1e-3
    # The model holds the best epoch's weights: its validation loss is that epoch's, not the last one's.
    model.compile(loss="sparse_categorical_crossentropy")
    restored = model.evaluate(*contradicting, batch_size=10, verbose=0, return_dict=True)["loss"]
    assert restored == pytest.approx(val_loss[history.best_epoch - 1], rel=1e-5)
    assert history.curve["epoch"] == list(range(1, history.epochs_run + 1))
    assert len(history.curve["seconds"]) == len(history.curve["learning_rate"]) == history.epochs_run


def fit_for_the_schedule(schedule, learning_rate, epochs):
    """A tiny CNN fitted ``epochs`` epochs (patience never reached) on 30 images in batches of 10: 3 steps each."""
    images, labels = striped_images(30)
    model = build_scratch_cnn(images.shape[1:], N_CLASSES, **TINY, batch_norm=False, dropout=0.0, augment=())
    settings = TrainingSettings(learning_rate=learning_rate, lr_schedule=schedule, epochs=epochs, batch_size=10,
                                patience=epochs)
    history = fit_with_early_stopping(model, images, labels, (images, labels), settings)
    assert history.epochs_run == epochs
    return history.curve["learning_rate"]


def test_the_plateau_schedule_halves_the_rate_after_two_epochs_without_progress():
    # At 1e-7 no epoch improves the validation loss by ReduceLROnPlateau's min_delta (1e-4): the first
    # epoch sets the best, then every PLATEAU_PATIENCE epochs without progress cut the rate by PLATEAU_FACTOR.
    # The history records the rate an epoch trained with (read before a cut at its end).
    rates = fit_for_the_schedule("plateau", 1e-7, epochs=8)
    cuts_before = [max(0, (epoch - 2) // PLATEAU_PATIENCE) for epoch in range(1, 9)]
    assert cuts_before == [0, 0, 0, 1, 1, 2, 2, 3]
    assert rates == pytest.approx([1e-7 * PLATEAU_FACTOR**cuts for cuts in cuts_before], rel=1e-6)


def test_the_cosine_schedule_decays_to_zero_over_every_step_of_the_fit():
    # Keras' CosineDecay (alpha 0): lr0 * (1 + cos(pi * step / steps)) / 2, over epochs x 3 steps;
    # the history records the rate at each epoch's end.
    rates = fit_for_the_schedule("cosine", 0.01, epochs=4)
    steps = 4 * 3
    expected = [0.01 * (1 + math.cos(math.pi * 3 * epoch / steps)) / 2 for epoch in range(1, 5)]
    assert rates == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert rates[0] > rates[1] > rates[2] > rates[3] == pytest.approx(0.0, abs=1e-9)


def test_the_constant_schedule_keeps_the_rate():
    assert fit_for_the_schedule("constant", 0.01, epochs=3) == pytest.approx([0.01] * 3, rel=1e-6)


@pytest.mark.parametrize("augment", [list(AUGMENTATIONS), []], ids=["every augmentation", "none"])
def test_augmentation_changes_the_output_in_training_only(keras, augment):
    images, _ = striped_images(6, size=16)
    # No dropout, no batch norm: the only difference training=True can make is the augmentation.
    model = build_scratch_cnn(images.shape[1:], N_CLASSES, **TINY, batch_norm=False, dropout=0.0, augment=augment)
    inference = keras.ops.convert_to_numpy(model(images, training=False))
    np.testing.assert_array_equal(predict_probabilities(model, images), inference)
    np.testing.assert_array_equal(predict_probabilities(model, images), inference)
    training = keras.ops.convert_to_numpy(model(images, training=True))
    assert np.abs(training - inference).max() > 1e-6 if augment else np.array_equal(training, inference)


@pytest.mark.slow
def test_the_saved_model_loaded_alone_in_a_fresh_process_reproduces_the_test_accuracy(tmp_path):
    images, labels = striped_images(36, seed=1)
    test_images, test_labels = striped_images(15, seed=2)
    model, _ = fit_scratch_cnn(images, labels, N_CLASSES, **TINY, epochs=3, normalization="standardize")
    probabilities = predict_probabilities(model, test_images)
    accuracy = float((probabilities.argmax(axis=1) == test_labels).mean())
    save_model(model, tmp_path / "model.keras")
    # Plain Keras, no featpipe import: the scratch CNN holds only Keras' own layers.
    loaded = probabilities_in_a_fresh_process(tmp_path / "model.keras", test_images, tmp_path, '')
    assert float((loaded.argmax(axis=1) == test_labels).mean()) == accuracy
    np.testing.assert_allclose(loaded, probabilities, rtol=1e-5, atol=1e-6)


def test_standardize_gives_the_first_convolution_zero_mean_unit_variance_inputs(keras):
    images, _ = striped_images(12)
    model = build_scratch_cnn(
        images.shape[1:], N_CLASSES, **TINY, augment=(), normalization="standardize", train_images=images
    )
    standardized = keras.ops.convert_to_numpy(keras.Model(model.input, model.get_layer("standardize").output)(images))
    assert np.mean(standardized) == pytest.approx(0.0, abs=1e-5)
    assert np.var(standardized) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"augment": ["horizontal_flip", "blur"]}, "unknown augmentation 'blur'; expected some of: horizontal_flip, vertical_flip, shift, zoom, rotation"),
        ({"normalization": "minmax"}, "unknown normalization 'minmax'; expected one of: rescale, standardize, none"),
        ({"lr_schedule": "step"}, "unknown lr_schedule 'step'; expected one of: plateau, cosine, constant"),
        ({"filters": []}, r"filters: expected a list of filter counts, one per block, got \[\]"),
        ({"dropout": 1.0}, r"dropout: expected a number in \[0, 1\), got 1.0"),
        ({"epochs": 0}, "epochs: expected an integer >= 1, got 0"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_in_one_line(settings, message):
    images, labels = striped_images(6)
    with pytest.raises(FeatpipeError, match=f"^{message}$"):
        fit_scratch_cnn(images, labels, N_CLASSES, **{**TINY, **settings})


def test_images_that_are_not_stored_uint8_are_refused():
    images, labels = striped_images(6)
    with pytest.raises(
        FeatpipeError, match=r"training images: expected uint8 \[N, H, W, 1\|3\] as stored, got float64"
    ):
        fit_scratch_cnn(images / 255, labels, N_CLASSES)
