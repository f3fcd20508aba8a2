"""PNG figures: confusion matrices with class names, and the accuracy bar chart.

Figures are made with matplotlib's object API on the Agg canvas, so no GUI
backend or global pyplot state is involved.
"""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from plumbing.atomic import atomic_output


def _save(figure, path):
    FigureCanvasAgg(figure)
    with atomic_output(path) as aside:
        figure.savefig(aside, format="png", dpi=120, bbox_inches="tight")


def save_confusion_png(path, counts, class_names, title):
    """Draw a confusion matrix.

    Parameters
    ----------
    counts : ndarray of shape (n_classes, n_classes), rows actual, columns predicted
    class_names : list of str
    title : str
    """
    n = len(class_names)
    size = max(4.0, 0.55 * n + 2.0)
    figure = Figure(figsize=(size + 1.0, size))
    axes = figure.add_subplot()
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(n), labels=class_names, rotation=45, ha="right")
    axes.set_yticks(range(n), labels=class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    axes.set_title(title)
    threshold = counts.max() / 2 if counts.size else 0
    for (row, column), value in np.ndenumerate(counts):
        colour = "white" if value > threshold else "black"
        axes.text(column, row, str(value), ha="center", va="center", color=colour, fontsize=8)
    _save(figure, path)


def save_accuracy_chart(path, names, accuracies, baseline=None, highlight=()):
    """Horizontal bars of test accuracy per model, in the order given (top first).

    Parameters
    ----------
    names : list of str, model names
    accuracies : list of float in [0, 1]
    baseline : str or None, the baseline model's name: drawn grey, with a dashed line at its accuracy
    highlight : names to draw orange and label "random weights"
    """
    from matplotlib.patches import Patch

    kinds = {"baseline": "tab:gray", "random weights": "tab:orange", "pretrained features": "tab:blue"}

    def kind(name):
        return "baseline" if name == baseline else "random weights" if name in highlight else "pretrained features"

    figure = Figure(figsize=(7.0, 0.45 * len(names) + 1.8))
    axes = figure.add_subplot()
    positions = np.arange(len(names))[::-1]
    axes.barh(positions, accuracies, color=[kinds[kind(name)] for name in names])
    axes.set_yticks(positions, labels=names)
    for position, accuracy in zip(positions, accuracies):
        axes.text(accuracy, position, f" {accuracy:.3f}", va="center", fontsize=8)
    if baseline in names:
        axes.axvline(accuracies[names.index(baseline)], color="tab:gray", linestyle="--", linewidth=1)
    shown = [label for label in kinds if any(kind(name) == label for name in names)]
    axes.legend(
        handles=[Patch(color=kinds[label], label=label) for label in shown],
        loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=len(shown), frameon=False,
    )
    axes.set_xlim(0, 1.1)
    axes.set_xlabel("test accuracy")
    axes.set_title("Test accuracy by model")
    _save(figure, path)


def save_curves_png(path, summary, title="Test accuracy against labelled images per class"):
    """Learning curves: mean test accuracy against images per class (log scale), ± one std as a band.

    The baseline (the pixel forest) is drawn black, thick and dashed, with a
    dotted line at its accuracy at the largest size: the level the report's
    sentence asks the feature models to reach. A CNN on the images is drawn
    thick, with diamonds. The whole training split
    (``per_class`` ``"all"``) sits at its rows per class, labelled ``all``.

    Parameters
    ----------
    summary : dict from :func:`learning_curves.curves.summarise_curves`; reads ``models``,
        ``per_class`` and ``repeats``
    title : str
    """
    figure = Figure(figsize=(8.0, 5.0))
    axes = figure.add_subplot()
    colours = iter(_colours(sum(not curve["baseline"] for curve in summary["models"].values())))
    for name, curve in summary["models"].items():
        sizes = np.array([size.get("images_per_class", size["per_class"]) for size in curve["sizes"]])
        mean = np.array([size["mean"] for size in curve["sizes"]])
        std = np.array([size["std"] for size in curve["sizes"]])
        if curve["baseline"]:
            style = {"color": "black", "linewidth": 2.6, "linestyle": "--", "marker": "s", "zorder": 3}
        elif curve.get("cnn"):
            style = {"color": next(colours), "linewidth": 2.6, "marker": "D", "markersize": 5, "zorder": 3}
        else:
            style = {"color": next(colours), "linewidth": 1.6, "marker": "o", "markersize": 4, "zorder": 2}
        axes.plot(sizes, mean, label=name, **style)
        if curve["baseline"]:
            axes.axhline(mean[-1], color="black", linewidth=0.8, linestyle=":", zorder=1,
                         label=_at_largest(name, curve["sizes"][-1]["per_class"]))
        axes.fill_between(sizes, mean - std, mean + std, color=style["color"], alpha=0.12, linewidth=0, zorder=1)
    axes.set_xscale("log")
    first = next(iter(summary["models"].values()))["sizes"]
    axes.set_xticks([size.get("images_per_class", size["per_class"]) for size in first],
                    labels=[str(size["per_class"]) for size in first])
    axes.minorticks_off()
    axes.set_xlabel("labelled training images per class (log scale)")
    axes.set_ylabel(f"test accuracy, mean ± 1 std over {summary['repeats']} draws")
    axes.grid(True, color="0.9", linewidth=0.8)
    axes.set_axisbelow(True)
    axes.set_title(title)
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=9)
    _save(figure, path)


def _at_largest(name, per_class):
    return f"{name} at {per_class} per class" if isinstance(per_class, int) else f"{name} with the whole split"


def save_embedding_png(path, coordinates, labels, class_names, title):
    """A 2-D embedding (t-SNE) as a scatter coloured by class, with the class names in a legend.

    Parameters
    ----------
    coordinates : ndarray of shape (n_samples, 2)
    labels : ndarray of shape (n_samples,), class indices into ``class_names``
    class_names : list of str
    title : str
    """
    figure = Figure(figsize=(8.0, 6.5))
    axes = figure.add_subplot()
    labels = np.asarray(labels)
    # Shuffled drawing order, so that the last class drawn does not hide the others where they overlap.
    order = np.random.default_rng(0).permutation(len(labels))
    colours = _colours(len(class_names))
    # Dots shrink as they get many, so that 2,000 of them still show the clusters' shapes.
    dot_area = float(np.clip(12000 / max(len(labels), 1), 6, 30))
    axes.scatter(coordinates[order, 0], coordinates[order, 1], c=[colours[label] for label in labels[order]],
                 s=dot_area, alpha=0.8, linewidths=0)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="", marker="o", markersize=7, color=colours[index], label=name)
               for index, name in enumerate(class_names) if np.any(labels == index)]
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, title="class")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(title)
    _save(figure, path)


def _colours(count):
    """``count`` distinguishable colours: tab10, tab20, then evenly spaced hues."""
    from matplotlib import colormaps

    if count <= 10:
        return list(colormaps["tab10"].colors[:count])
    if count <= 20:
        return list(colormaps["tab20"].colors[:count])
    return [colormaps["hsv"](index / count) for index in range(count)]


def save_training_curves(path, name, curve):
    """Loss and accuracy per epoch, training and validation, of a model trained by epochs (a CNN).

    Parameters
    ----------
    name : str, the model's name, for the title
    curve : dict of lists, one entry per epoch: ``epoch``, ``phase``, ``loss``, ``accuracy`` and,
        with a validation split, ``val_loss`` and ``val_accuracy``
        (:class:`classifiers.cnn.training.TrainingHistory`'s ``curve``)
    """
    figure = Figure(figsize=(9.0, 3.6))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    epochs = np.asarray(curve["epoch"])
    for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.plot(epochs, curve[metric], color="tab:blue", marker="o", markersize=3, label="training")
        if f"val_{metric}" in curve:
            axes.plot(epochs, curve[f"val_{metric}"], color="tab:orange", marker="o", markersize=3, label="validation")
        phases = np.asarray(curve["phase"])
        for start in epochs[1:][phases[1:] != phases[:-1]]:  # where fine-tuning's second phase begins
            axes.axvline(start - 0.5, color="0.5", linestyle=":", linewidth=1)
            axes.text(start - 0.4, 0.98, "blocks unfrozen", transform=axes.get_xaxis_transform(), va="top", fontsize=8)
        axes.set_xlabel("epoch")
        axes.set_title(metric)
        axes.grid(True, color="0.9", linewidth=0.8)
        axes.set_axisbelow(True)
    accuracy_axes.legend(frameon=False)
    figure.suptitle(f"{name}: training curves")
    figure.tight_layout()
    _save(figure, path)
