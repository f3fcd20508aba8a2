"""PNG figures: confusion matrices with class names, and the accuracy bar chart.

Figures are made with matplotlib's object API on the Agg canvas, so no GUI
backend or global pyplot state is involved.
"""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from features.atomic import atomic_output


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
