"""Fine-tuning a registry backbone in two phases, at its smallest input size, with random weights."""

import dataclasses
import types

import numpy as np
import pytest

from classifiers.cnn import finetune
from classifiers.cnn.finetune import (
    build_finetune_model,
    first_unfrozen_layer,
    fit_finetune,
    fit_head,
    fit_unfrozen_blocks,
    unfreeze_blocks,
)
from classifiers.cnn.training import (
    TrainingSettings,
    predict_probabilities,
    save_model,
)
from features.backbones import get_backbone, list_backbones
from plumbing.errors import FeatpipeError
from tests.conftest import probabilities_in_a_fresh_process, uninitialised_weights

N_CLASSES = 3
SMALLEST = (32, 32)  # VGG16's minimum input: 1x1x512 after block5
TWO_EPOCHS = TrainingSettings(learning_rate=1e-3, epochs=2, batch_size=10, patience=2)


def ten_per_class(seed=0, size=16):
    """10 uint8 grayscale images per class, [30, size, size, 1], the class a bright quarter; labels [30]."""
    rng = np.random.default_rng(seed)
    labels = np.arange(10 * N_CLASSES) % N_CLASSES
    images = rng.integers(0, 80, size=(len(labels), size, size, 1), dtype=np.uint8)
    half = size // 2
    for index, label in enumerate(labels):
        row, column = divmod(label, 2)
        images[index, row * half : (row + 1) * half, column * half : (column + 1) * half] += 170
    return images, labels


def weights_by_layer(model):
    return {layer.name: [np.array(w) for w in layer.get_weights()] for layer in model.layers if layer.weights}


def changed(before, after):
    """Names of the layers whose weights differ between two :func:`weights_by_layer` snapshots."""
    return {name for name in before if any(not np.array_equal(b, a) for b, a in zip(before[name], after[name]))}


def weights_of(finetuned):
    """``(the backbone's weights by layer, the head's weights)`` of a FinetuneModel, copied."""
    return weights_by_layer(finetuned.backbone_model), finetuned.model.get_layer("classes").get_weights()


@pytest.fixture(scope="module")
def fine_tuned():
    """VGG16 fine-tuned end to end at 32x32 (unfreeze 2), and its weights before each phase and after both.

    One fit serves the tests of both phases and the end-to-end test: at
    32x32 a fit costs 15-20 s of CPU, mostly Keras tracing the graph. The
    snapshots (:func:`weights_of`) are taken by wrapping the two phases,
    which ``fit_finetune`` calls by their module names. Phase two at 1e-4,
    not the default 1e-5: two epochs move the head's weights for sure.
    """
    snapshots = []

    def snapshot_first(fit_phase):
        def fit(finetuned, *args, **kwargs):
            snapshots.append(weights_of(finetuned))
            return fit_phase(finetuned, *args, **kwargs)

        return fit

    images, labels = ten_per_class(seed=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(finetune, "fit_head", snapshot_first(fit_head))
        patch.setattr(finetune, "fit_unfrozen_blocks", snapshot_first(fit_unfrozen_blocks))
        finetuned, history = fit_finetune(
            images, labels, N_CLASSES, "vgg16", weights="none", input_size=SMALLEST, unfreeze=2, augment=["shift"],
            finetune_learning_rate=1e-4, epochs=2, batch_size=10, validation_fraction=0.2, patience=1, seed=3,
        )  # fmt: skip
    snapshots.append(weights_of(finetuned))
    assert len(snapshots) == 3, "fit_finetune no longer calls fit_head and fit_unfrozen_blocks"
    return types.SimpleNamespace(finetuned=finetuned, history=history, snapshots=snapshots)


BLOCKS_4_AND_5 = ["block4_conv1", "block4_conv2", "block4_conv3", "block5_conv1", "block5_conv2", "block5_conv3"]


def test_phase_one_trains_the_head_and_leaves_the_backbone_as_it_was(fine_tuned):
    (backbone_before, head_before), (backbone_after, head_after), _ = fine_tuned.snapshots
    assert len(backbone_before) == 13  # VGG16's convolutions
    assert changed(backbone_before, backbone_after) == set()
    assert not np.array_equal(head_before[0], head_after[0])


def test_phase_two_trains_only_the_unfrozen_blocks_and_the_head(fine_tuned):
    _, (backbone_before, head_before), (backbone_after, head_after) = fine_tuned.snapshots
    assert changed(backbone_before, backbone_after) == set(BLOCKS_4_AND_5)
    assert not np.array_equal(head_before[0], head_after[0])
    phase_two = fine_tuned.history.phases[1]
    assert phase_two["phase"] == 2 and phase_two["blocks"] == ["block4_", "block5_"]
    assert phase_two["layers"] == BLOCKS_4_AND_5


def test_batch_norm_in_an_unfrozen_block_keeps_its_pretrained_statistics_and_scale():
    images, labels = ten_per_class()
    finetuned = build_finetune_model("mobilenet_v2", images.shape[1:], N_CLASSES, weights="none", input_size=SMALLEST)
    before = weights_by_layer(finetuned.backbone_model)
    trained = unfreeze_blocks(finetuned, 1)  # MobileNetV2's last block: Conv_1 and its batch norm Conv_1_bn
    assert trained == ["Conv_1"]
    fit_with_blocks = fit_unfrozen_blocks(finetuned, 1, images, labels, None, dataclasses.replace(TWO_EPOCHS, epochs=1))
    assert fit_with_blocks.epochs_run == 1
    assert changed(before, weights_by_layer(finetuned.backbone_model)) == {"Conv_1"}


@pytest.mark.slow
def test_fine_tuning_runs_end_to_end_and_the_saved_model_alone_reproduces_its_test_accuracy(fine_tuned, tmp_path):
    finetuned, history = fine_tuned.finetuned, fine_tuned.history
    test_images, test_labels = ten_per_class(seed=2)
    assert finetuned.random_weights and finetuned.input_size == SMALLEST and len(finetuned.weights_sha256) == 64
    assert [phase["phase"] for phase in history.phases] == [1, 2]
    assert history.phases[1]["blocks"] == ["block4_", "block5_"]
    assert history.curve["phase"] == [1] * history.phases[0]["epochs_run"] + [2] * history.phases[1]["epochs_run"]
    assert history.best_epoch == history.phases[0]["epochs_run"] + history.phases[1]["best_epoch"]
    probabilities = predict_probabilities(finetuned.model, test_images)
    accuracy = float((probabilities.argmax(axis=1) == test_labels).mean())

    save_model(finetuned.model, tmp_path / "model.keras")
    # Keras' own loader; importing featpipe's preprocessing module registers its layer.
    loaded = probabilities_in_a_fresh_process(tmp_path / "model.keras", test_images, tmp_path, 'features.preprocessing')
    assert float((loaded.argmax(axis=1) == test_labels).mean()) == accuracy
    np.testing.assert_allclose(loaded, probabilities, rtol=1e-5, atol=1e-6)


def test_every_registry_backbone_has_its_blocks_in_order_in_its_keras_model():
    from plumbing.backend import load_keras

    keras = load_keras()
    for name in list_backbones():
        backbone = get_backbone(name)
        builder = getattr(getattr(keras.applications, backbone.module_name), backbone.application.split(".")[1])
        size = (75, 75) if name == "inception_v3" else SMALLEST  # InceptionV3's minimum is 75x75
        with uninitialised_weights(keras):  # only the layer names are read
            names = [layer.name for layer in builder(weights=None, include_top=False, input_shape=size + (3,)).layers]
        starts = [
            first_unfrozen_layer(names, backbone.blocks, unfreeze) for unfreeze in range(len(backbone.blocks), 0, -1)
        ]
        # Each block starts after the one before it and holds at least one layer.
        assert starts == sorted(set(starts)) and starts[-1] < len(names), name


def test_blocks_run_from_after_the_previous_blocks_last_layer():
    # Prefixes (VGG, DenseNet): a transition between blocks goes with the later block, a final conv with the last.
    names = ["input", "block1_conv", "block1_pool", "transition", "block2_conv", "block2_pool", "top_conv"]
    assert first_unfrozen_layer(names, ("block1_", "block2_"), 1) == names.index("transition")
    # InceptionV3: unnamed inner layers, a block found by the concatenation that ends it.
    names = ["input", "conv2d", "mixed0", "conv2d_1", "mixed9_0", "mixed1", "conv2d_2", "mixed9_1", "mixed10"]
    blocks = ("mixed0$", "mixed1$", "mixed10$")
    assert first_unfrozen_layer(names, blocks, 1) == names.index("conv2d_2")
    assert first_unfrozen_layer(names, blocks, 2) == names.index("conv2d_1")
    assert first_unfrozen_layer(names, blocks, 3) == 0  # all blocks: the whole backbone
    assert first_unfrozen_layer(names, blocks, 0) == len(names)


@pytest.mark.parametrize(
    "backbone, options, message",
    [
        ("vgg16", {"unfreeze": 6}, r"unfreeze: backbone vgg16 has 5 blocks \(block1_ .. block5_\); expected 0 to 5, got 6"),
        ("mine.keras", {}, r"cannot fine-tune mine.keras: a model file has no known blocks to unfreeze; expected a registry backbone: "),
        ("vgg16", {"augment": ["cutout"]}, "unknown augmentation 'cutout'; expected some of: horizontal_flip, vertical_flip, shift, zoom, rotation"),
        ("vgg16", {"precision": "float16"}, "unknown precision 'float16'; expected one of: float32, mixed_float16, mixed_bfloat16"),
        ("vgg16", {"input_size": (16, 16)}, r"input_size \[16, 16\] for vgg16: Input size must be at least 32x32"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_in_one_line(backbone, options, message):
    images, labels = ten_per_class()
    with pytest.raises(FeatpipeError, match=f"^{message}") as raised:
        fit_finetune(images, labels, N_CLASSES, backbone, weights="none", **options)
    assert "\n" not in str(raised.value)


def test_a_backbone_without_blocks_refuses_to_unfreeze_any(monkeypatch):
    blockless = dataclasses.replace(get_backbone("vgg16"), blocks=())
    monkeypatch.setattr(finetune, "get_backbone", lambda name: blockless)
    images, labels = ten_per_class()
    with pytest.raises(FeatpipeError, match="^backbone vgg16 has no blocks to unfreeze; expected unfreeze: 0, got 1$"):
        fit_finetune(images, labels, N_CLASSES, "vgg16", weights="none", unfreeze=1)
