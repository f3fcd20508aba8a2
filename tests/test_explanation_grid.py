"""The explanation grid as a reader sees it: its layout, and each map drawn over its own image, read from the PNG."""

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image
from scipy import ndimage

from explanations.methods import Explanations
from explanations.output import ALPHA_FLOOR, OVERLAY_ALPHA, grid_layout, save_explanation_grid

CLASS_NAMES = ["circle", "square", "cross"]
GRAY = 128
SIZE = 16


def explanations_of(labels, maps):
    labels = np.asarray(labels)
    return Explanations(
        model="toy", maps=maps, settings={method: {} for method in maps}, seconds={}, labels=labels,
        predicted=labels.copy(), scores=np.zeros((len(labels), 3), np.float32), score_kind="probability",
        classes=np.arange(3), metadata={},
    )


def blobs(mask, smallest):
    """Bounding boxes (row slice, column slice) of the connected regions of ``mask`` of ``smallest`` pixels or more."""
    labelled, count = ndimage.label(mask)
    boxes = ndimage.find_objects(labelled)
    return [box for index, box in enumerate(boxes, start=1) if (labelled[box] == index).sum() >= smallest]


def test_every_class_gets_a_row_of_its_images_when_that_fits_a_screen():
    # explain samples per_class images of every class, in the test split's order (classes interleaved).
    labels = np.tile(np.arange(10), 2)
    order, (rows, across) = grid_layout(labels, columns=6)
    assert (rows, across) == (10, 2)
    assert [labels[order[slot]] for slot in range(0, 20, 2)] == list(range(10))
    assert all(labels[order[2 * row]] == labels[order[2 * row + 1]] for row in range(10))
    assert sorted(order) == list(range(20))


def test_otherwise_the_images_run_on_in_class_order_to_a_screens_shape():
    labels = np.arange(10)  # one image per class: a row each would be 10 rows of one group
    order, (rows, across) = grid_layout(labels, columns=6)
    assert across > 1 and rows == -(-10 // across) and order == list(range(10))
    uneven = np.array([2, 0, 0, 1, 2, 2])
    order, (rows, across) = grid_layout(uneven, columns=6)
    assert [int(uneven[index]) for index in order] == [0, 0, 1, 2, 2, 2] and rows * across >= 6


def test_the_png_shows_each_image_in_its_class_row_with_its_maps_over_it(tmp_path):
    # Six plain gray images, two per class; occlusion says the top-left quarter is evidence for the class.
    labels = [0, 1, 2, 0, 1, 2]
    images = np.full((6, SIZE, SIZE, 1), GRAY, np.uint8)
    occlusion = np.zeros((6, SIZE, SIZE), np.float32)
    occlusion[:, : SIZE // 2, : SIZE // 2] = 1.0
    maps = {"occlusion": occlusion, "grad_cam": np.zeros((6, SIZE, SIZE), np.float32)}
    path = tmp_path / "toy.png"
    save_explanation_grid(path, images, explanations_of(labels, maps), CLASS_NAMES, title="toy: where it looks")
    with Image.open(path) as png:
        picture = np.asarray(png.convert("RGB")).astype(int)

    # The images themselves are the only panels of plain gray (a map tints the image under it).
    panels = blobs((picture == GRAY).all(axis=-1), smallest=400)
    assert len(panels) == 6
    tops = sorted({box[0].start for box in panels})
    lefts = sorted({box[1].start for box in panels})
    assert len(tops) == 3 and len(lefts) == 2, "three rows (one per class) of two image groups"
    height = panels[0][0].stop - panels[0][0].start
    width = panels[0][1].stop - panels[0][1].start
    assert abs(height - width) <= 1, "square images stay square"

    # Occlusion's strongest red, at OVERLAY_ALPHA over the gray, covers each image's top-left quarter only.
    red = OVERLAY_ALPHA * np.asarray(colormaps["RdBu_r"](1.0)[:3]) * 255 + (1 - OVERLAY_ALPHA) * GRAY
    hot = blobs((np.abs(picture - red) <= 3).all(axis=-1), smallest=50)
    assert len(hot) == 6
    for box in hot:
        assert box[0].start in tops, "the hot quarter starts at the top of its row's panels"
        assert box[0].stop - box[0].start == pytest.approx(height / 2, abs=2)
        assert box[1].stop - box[1].start == pytest.approx(width / 2, abs=2)
        image_left = max(left for left in lefts if left < box[1].start)
        assert box[1].start - image_left == pytest.approx(width, rel=0.25), "the occlusion panel follows its image"
    # Where a map is 0 it barely tints: the gray shows through at ALPHA_FLOOR (Grad-CAM's 0 is inferno's black).
    faint = (1 - ALPHA_FLOOR) * GRAY + ALPHA_FLOOR * np.asarray(colormaps["inferno"](0.0)[:3]) * 255
    assert len(blobs((np.abs(picture - faint) <= 3).all(axis=-1), smallest=400)) == 6
