"""What the report's pictures show, read back from the PNG files: the bars, cells, curves and dots themselves.

A blank or wrong picture is still a valid PNG: each test decodes the file
(Pillow) and finds what was drawn by its colour, where it should be.
"""

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.colors import to_rgb
from PIL import Image
from scipy import ndimage

from reporting import plots


def decoded(path):
    """The PNG at ``path`` as uint8 RGB [height, width, 3]."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def mask_of(image, colour, tolerance=3):
    """Pixels of ``colour`` (a matplotlib colour), bool [height, width]."""
    target = np.round(np.asarray(to_rgb(colour)) * 255)
    return np.abs(image.astype(int) - target).max(axis=-1) <= tolerance


def largest_blob(mask):
    """The largest connected region of ``mask``: ``(area, (row slice, column slice))``."""
    labelled, count = ndimage.label(mask)
    assert count, "nothing of that colour was drawn"
    areas = ndimage.sum(mask, labelled, index=range(1, count + 1))
    biggest = int(np.argmax(areas))
    return float(areas[biggest]), ndimage.find_objects(labelled)[biggest]


def test_accuracy_bars_are_as_long_as_the_accuracies_in_order_and_coloured_by_kind(tmp_path):
    path = tmp_path / "accuracy.png"
    plots.save_accuracy_chart(path, ["vgg16-fc2-svm", "random-fc2-rf", "pixel_rf"], [0.9, 0.45, 0.6],
                              baseline="pixel_rf", highlight={"random-fc2-rf"})
    image = decoded(path)
    bars = {kind: largest_blob(mask_of(image, colour))[1] for kind, colour in
            (("features", "tab:blue"), ("random", "tab:orange"), ("baseline", "tab:gray"))}
    left = {kind: box[1].start for kind, box in bars.items()}
    assert max(left.values()) - min(left.values()) <= 1, "every bar starts at 0"
    length = {kind: box[1].stop - box[1].start for kind, box in bars.items()}
    assert length["features"] / length["baseline"] == pytest.approx(0.9 / 0.6, rel=0.02)
    assert length["random"] / length["baseline"] == pytest.approx(0.45 / 0.6, rel=0.02)
    top = [bars[kind][0].start for kind in ("features", "random", "baseline")]
    assert top == sorted(top), "bars are drawn top first, in the order given"


def test_the_confusion_matrix_puts_each_count_in_its_actual_row_and_predicted_column(tmp_path):
    path = tmp_path / "confusion.png"
    counts = np.zeros((3, 3), int)
    counts[1, 2] = 9  # actual class 1 ("square"), predicted class 2 ("cross")
    plots.save_confusion_png(path, counts, ["circle", "square", "cross"], "toy")
    image = decoded(path)
    blues = colormaps["Blues"]
    darkest_area, darkest = largest_blob(mask_of(image, blues(1.0)))
    # The eight zero cells, in the lightest blue, and the 9 span the matrix (the colour bar's ends are thin
    # lines of these colours, far smaller).
    zeros_area, zeros = largest_blob(mask_of(image, blues(0.0)))
    assert zeros_area == pytest.approx(8 * darkest_area, rel=0.1), "eight cells of zero, one of 9, all alike in size"
    top, bottom = min(zeros[0].start, darkest[0].start), max(zeros[0].stop, darkest[0].stop)
    left, right = min(zeros[1].start, darkest[1].start), max(zeros[1].stop, darkest[1].stop)
    row = ((darkest[0].start + darkest[0].stop) / 2 - top) / (bottom - top)
    column = ((darkest[1].start + darkest[1].stop) / 2 - left) / (right - left)
    assert (row, column) == (pytest.approx(1.5 / 3, abs=0.03), pytest.approx(2.5 / 3, abs=0.03))


def curve(per_class, means, baseline=False):
    return {"baseline": baseline, "sizes": [{"per_class": size, "mean": mean, "std": 0.02}
                                            for size, mean in zip(per_class, means)]}


def test_learning_curves_rise_where_the_accuracies_rise(tmp_path):
    path = tmp_path / "curves.png"
    sizes = [5, 10, 20, 50]
    summary = {"per_class": sizes, "repeats": 3, "models": {
        "pixel_rf": curve(sizes, [0.5] * 4, baseline=True), "vgg16-fc2-svm": curve(sizes, [0.2, 0.4, 0.6, 0.8])}}
    plots.save_curves_png(path, summary)
    image = decoded(path)
    rows, columns = np.nonzero(mask_of(image, colormaps["tab10"](0), tolerance=8))
    # The legend sits right of the plot: keep the plot's left part, where the curve is.
    inside = columns < image.shape[1] * 0.6
    slope = np.polyfit(columns[inside], rows[inside], 1)[0]
    assert slope < -0.3, "accuracy rising from 0.2 to 0.8 is a line going up (image rows fall)"


def test_the_embedding_draws_each_class_where_its_points_are(tmp_path):
    path = tmp_path / "embedding.png"
    labels = np.arange(60) % 3
    rng = np.random.default_rng(0)
    coordinates = np.c_[labels * 20.0, np.zeros(60)] + rng.normal(0, 3.0, (60, 2))  # classes left to right
    plots.save_embedding_png(path, coordinates, labels, ["circle", "square", "cross"], "toy")
    image = decoded(path)
    colours = plots._colours(3)
    centres = []
    for colour in colours:
        # The dots are drawn with alpha 0.8 over white: found by that blend (the legend's markers are opaque).
        blend = 0.8 * np.asarray(to_rgb(colour)) + 0.2
        _, columns = np.nonzero(mask_of(image, blend, tolerance=6))
        assert len(columns) > 50, f"no dots of {colour}"
        centres.append(columns.mean())
    assert centres == sorted(centres), "class 0 left, class 2 right, as their coordinates are"


def test_training_curves_show_the_loss_falling_and_the_accuracy_rising_in_two_panels(tmp_path):
    path = tmp_path / "training.png"
    epochs = list(range(1, 9))
    plots.save_training_curves(path, "scratch-cnn", {
        "epoch": epochs, "phase": [1] * 8, "loss": [2.0 / epoch for epoch in epochs],
        "accuracy": [0.1 * epoch for epoch in epochs]})
    image = decoded(path)
    rows, columns = np.nonzero(mask_of(image, "tab:blue", tolerance=8))
    middle = image.shape[1] / 2
    loss, accuracy = columns < middle, columns > middle
    assert np.polyfit(columns[loss], rows[loss], 1)[0] > 0.1, "the loss falls: its line goes down the picture"
    assert np.polyfit(columns[accuracy], rows[accuracy], 1)[0] < -0.1, "the accuracy rises"
