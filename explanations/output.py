"""What an explanation run leaves behind: an HDF5 file for analysts and a PNG grid for eyes.

``reports/explanations/<model>.h5`` (:func:`write_explanations`), readable
with h5py alone:

- ``maps/<method>``: float32 (n, height, width) at the stored image size;
  its attributes hold the method's settings and what the values mean
  (per-image arrays, like LIME's ``r2``, too), and a ``caveat`` where the
  maps need care (:mod:`explanations.caveats`; the grid marks them with *);
- ``ids`` (UTF-8), ``labels`` (the true, explained classes), ``predicted``;
- ``probabilities`` (n, n_classes), or ``decision_values`` for a model
  without probabilities (the SVM), with a ``score_kind`` attribute;
  ``classes``: the label of each column;
- root attributes: ``model``, ``score_kind``, ``scores`` (the name of the
  scores dataset), ``methods``, ``class_names``, ``explained_class``, the
  model's description (backbone, layer, weights, ``random_weights``, ...),
  and a ``warning`` when the weights are random.

``reports/explanations/<model>.png`` (:func:`save_explanation_grid`): each
image beside its maps, one row per class where that fits a screen.

Both files are written beside their final name and renamed when whole.
"""

import textwrap

import numpy as np

from explanations.caveats import CAVEAT_ATTRIBUTE
from explanations.methods import SIGNED_METHODS
from features.weights import RANDOM_WEIGHTS_WARNING
from plumbing.atomic import atomic_output
from storage.feature_store import storable_attribute

OVERLAY_ALPHA = 0.85  # the opacity of a map at its strongest
ALPHA_FLOOR = 0.1  # and where it is 0
TITLES = {
    "occlusion": "occlusion", "lime": "LIME", "grad_cam": "Grad-CAM", "guided_backprop": "guided backprop",
    "guided_grad_cam": "guided Grad-CAM",
}
MEANINGS = {
    "occlusion": "red: hiding it lowers the class",
    "lime": "red: showing it raises the class",
    "grad_cam": "bright: where the conv block saw the class",
    "guided_backprop": "bright: pixels the class score is sensitive to",
    "guided_grad_cam": "bright: sensitive pixels where the class was seen",
}


def scores_dataset_name(score_kind):
    """``probabilities`` for probabilities, ``decision_values`` for decision values."""
    return "probabilities" if score_kind == "probability" else "decision_values"


def write_explanations(path, explanations, ids, class_names, attrs=None):
    """Write one model's explanations to ``path`` (an ``.h5`` file), atomically.

    Parameters
    ----------
    explanations : Explanations
    ids : sequence of str, one per image (the image store's ids)
    class_names : list of str, indexed by label
    attrs : dict or None, more root attributes (e.g. the image store's fingerprint)
    """
    import h5py

    text = h5py.string_dtype("utf-8")
    scores_name = scores_dataset_name(explanations.score_kind)
    with atomic_output(path) as aside, h5py.File(aside, "w") as file:
        file.create_dataset("ids", data=np.asarray([str(value) for value in ids], dtype=object), dtype=text)
        file.create_dataset("labels", data=np.asarray(explanations.labels))
        file.create_dataset("predicted", data=np.asarray(explanations.predicted))
        scores = file.create_dataset(scores_name, data=explanations.scores.astype(np.float32))
        scores.attrs["score_kind"] = explanations.score_kind
        file.create_dataset("classes", data=np.asarray(explanations.classes))
        for method, maps in explanations.maps.items():
            dataset = file.create_dataset(f"maps/{method}", data=maps.astype(np.float32))
            for key, value in explanations.settings[method].items():
                dataset.attrs[key] = storable_attribute(value)
            dataset.attrs["seconds"] = float(explanations.seconds.get(method, float("nan")))
        root = {
            **explanations.metadata,
            "model": explanations.model,
            "score_kind": explanations.score_kind,
            "scores": scores_name,
            "methods": list(explanations.maps),
            "class_names": list(class_names),
            "explained_class": "the true class (labels), for every method",
            **(attrs or {}),
        }
        if explanations.metadata.get("random_weights"):
            root["warning"] = RANDOM_WEIGHTS_WARNING
        for key, value in root.items():
            file.attrs[key] = storable_attribute(value)


# One panel (an image, or a map over it, with its two-line title), in inches; the figure aims at a screen's shape.
PANEL_WIDTH, PANEL_HEIGHT = 1.35, 1.55
HEADING_HEIGHT = 1.0
GROUP_GAP = 0.2  # the space between two groups, in panels
SCREEN_ASPECT = 16 / 10


def save_explanation_grid(path, images, explanations, class_names, title=None):
    """A PNG to read on a screen: each image with each method's map over it, class by class.

    Each image makes a group: the image (its true and predicted class
    above it, red when they differ), then one map per method. Groups sit
    side by side in rows (:func:`grid_layout`): with the same number of
    images of every class (as ``explain`` samples them) and a figure not
    much taller or wider than a screen, one row per class; otherwise the
    groups wrap, in class order, to a screen's shape.

    Signed maps (occlusion, LIME) use a diverging colour map centred on 0
    (red: evidence for the class, blue: against); Grad-CAM and guided
    backprop, which are >= 0, a sequential one. A map is opaque where it is
    strong and lets the image show through where it is near 0. Each map is
    scaled to its own largest magnitude, so colours compare within a map,
    not across maps.

    Parameters
    ----------
    images : ndarray of shape (n_samples, height, width, channels), uint8
    explanations : Explanations
    class_names : list of str, indexed by label
    title : str or None, default: the model's name
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    methods = list(explanations.maps)
    columns = 1 + len(methods)
    order, (rows, across) = grid_layout(explanations.labels, columns)
    # One grid for every group, so that rows line up; a narrow empty column keeps the groups apart.
    ratios = ([1.0] * columns + [GROUP_GAP]) * across
    figure = Figure(figsize=(PANEL_WIDTH * sum(ratios[:-1]), PANEL_HEIGHT * rows + HEADING_HEIGHT), layout="constrained")
    grid = figure.subplots(rows, len(ratios) - 1, squeeze=False, gridspec_kw={"width_ratios": ratios[:-1]})
    drawn = set()
    for slot, index in enumerate(order):
        row, first = slot // across, (slot % across) * (columns + 1)
        _draw_image(grid[row, first], images[index], explanations, index, class_names)
        for offset, method in enumerate(methods, start=1):
            _draw_overlay(grid[row, first + offset], images[index], explanations.maps[method][index], method)
        drawn.update((row, first + offset) for offset in range(columns))
    for (row, column), axes in np.ndenumerate(grid):
        if (row, column) not in drawn:
            axes.set_axis_off()  # the gaps between groups, and the slots a short last row leaves
    marked = [method for method in methods if CAVEAT_ATTRIBUTE in explanations.settings.get(method, {})]
    for group in range(across):
        for offset, method in enumerate(methods, start=1):
            meaning = textwrap.fill(MEANINGS.get(method, ""), 24)
            mark = " *" if method in marked else ""
            grid[0, group * (columns + 1) + offset].set_title(f"{TITLES.get(method, method)}{mark}\n{meaning}", fontsize=7)
    heading, colour = title or explanations.model, "black"
    if explanations.metadata.get("random_weights"):
        heading, colour = heading + "\n" + textwrap.fill(RANDOM_WEIGHTS_WARNING, 110), "tab:red"
    figure.suptitle(heading, fontsize=10, color=colour)
    footer = "every map explains the true class; each is scaled to its own largest value"
    if marked:
        footer += "\n" + textwrap.fill("* read with care: " + explanations.settings[marked[0]][CAVEAT_ATTRIBUTE], 140)
    figure.supxlabel(footer, fontsize=8)
    FigureCanvasAgg(figure)
    with atomic_output(path) as aside:
        figure.savefig(aside, format="png", dpi=110)


def grid_layout(labels, columns):
    """Where each image goes: ``(order, (rows, across))``.

    ``order`` lists the images' indices slot by slot, row by row (``across``
    image groups a row), class by class; the last row may be short.
    One row per class when every class has the same number of images and
    that makes a figure within a factor 2 of a screen's shape; otherwise
    the images run on in class order, ``across`` chosen for the shape
    closest to a screen's.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,), each image's true class
    columns : int, panels in one group (the image and its maps)
    """
    labels = np.asarray(labels)
    by_class = np.argsort(labels, kind="stable").tolist()  # the images' own order within a class
    counts = np.unique(labels, return_counts=True)[1]
    if len(counts) and len(set(counts.tolist())) == 1:
        per_class = int(counts[0])
        if abs(np.log(_aspect(len(counts), per_class, columns) / SCREEN_ASPECT)) <= np.log(2):
            return by_class, (len(counts), per_class)
    fits = [(abs(np.log(_aspect(-(-len(labels) // across), across, columns) / SCREEN_ASPECT)), across)
            for across in range(1, max(len(labels), 1) + 1)]
    across = min(fits)[1]
    return by_class, (-(-len(labels) // across), across)


def _aspect(rows, across, columns):
    """Width over height of a figure of ``rows`` rows of ``across`` groups of ``columns`` panels."""
    return PANEL_WIDTH * (columns * across + GROUP_GAP * (across - 1)) / (PANEL_HEIGHT * rows + HEADING_HEIGHT)


def _draw_image(axes, image, explanations, row, class_names):
    true, predicted = explanations.labels[row], explanations.predicted[row]
    axes.imshow(_display(image), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    verdict = "tab:red" if predicted != true else "black"
    axes.set_title(f"true: {_name(class_names, true)}\npredicted: {_name(class_names, predicted)}", fontsize=7, color=verdict)
    axes.set_xticks([])
    axes.set_yticks([])


def _draw_overlay(axes, image, values, method):
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    axes.imshow(_display(image), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    magnitude = float(np.abs(values).max()) or 1.0
    signed = method in SIGNED_METHODS
    scale = Normalize(-magnitude if signed else 0.0, magnitude)
    colours = colormaps["RdBu_r" if signed else "inferno"](scale(values))
    # Opacity follows strength, so the image stays visible where the map says little.
    colours[..., 3] = ALPHA_FLOOR + (OVERLAY_ALPHA - ALPHA_FLOOR) * np.abs(values) / magnitude
    axes.imshow(colours, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])


def _display(image):
    """(height, width) for a gray image, (height, width, 3) for RGB."""
    return image[..., 0] if image.shape[-1] == 1 else image


def _name(class_names, label):
    label = int(label)
    return class_names[label] if 0 <= label < len(class_names) else str(label)
