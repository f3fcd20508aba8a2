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

Both files are written beside their final name and renamed when whole.
"""

import textwrap

import numpy as np

from explanations.caveats import CAVEAT_ATTRIBUTE
from explanations.methods import SIGNED_METHODS
from plumbing.atomic import atomic_output
from features.feature_store import storable_attribute

RANDOM_WEIGHTS_WARNING = "random weights: the backbone was never trained, so these maps explain an untrained network"
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


def save_explanation_grid(path, images, explanations, class_names, title=None):
    """A PNG: one row per image, the image then each method's map over it.

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
    rows, columns = len(images), 1 + len(methods)
    figure = Figure(figsize=(1.9 * columns, 2.05 * rows + 0.8), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    for row, image in enumerate(images):
        _draw_image(grid[row, 0], image, explanations, row, class_names)
        for column, method in enumerate(methods, start=1):
            _draw_overlay(grid[row, column], image, explanations.maps[method][row], method)
    marked = [method for method in methods if CAVEAT_ATTRIBUTE in explanations.settings.get(method, {})]
    for column, method in enumerate(methods, start=1):
        meaning = textwrap.fill(MEANINGS.get(method, ""), 26)
        mark = " *" if method in marked else ""
        grid[0, column].set_title(f"{TITLES.get(method, method)}{mark}\n{meaning}", fontsize=7)
    heading = title or explanations.model
    if explanations.metadata.get("random_weights"):
        heading += "\n" + textwrap.fill(RANDOM_WEIGHTS_WARNING.upper(), 70)
    figure.suptitle(heading, fontsize=9)
    footer = "every map explains the true class; each is scaled to its own largest value"
    if marked:
        footer += "\n" + textwrap.fill("* read with care: " + explanations.settings[marked[0]][CAVEAT_ATTRIBUTE], 110)
    figure.supxlabel(footer, fontsize=7)
    FigureCanvasAgg(figure)
    with atomic_output(path) as aside:
        figure.savefig(aside, format="png", dpi=110)


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
