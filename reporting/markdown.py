"""``report.md``: every model against the pixel baseline, from their metrics records.

Pure text in, text out: :func:`render_report` takes the
:class:`~classifiers.records.ModelRecord` of every model and returns Markdown.
"""


def rank(records):
    """Records sorted by test accuracy, best first (ties by name, so the order is stable)."""
    return sorted(records, key=lambda record: (-record.accuracy, record.model))


def random_weight_sources(records):
    """What came from random weights: ``backbone layer`` of feature sets, ``backbone (fine-tuned)``, sorted."""
    return sorted({source(r) for r in records if r.random_weights})


def source(record):
    """What a model learned from, for people: ``raw pixels``, ``vgg16 fc2``, ``vgg16 (fine-tuned)``, ``the images``."""
    if record.input == "pixels":
        return "raw pixels"
    if record.input == "features":
        return f"{record.backbone} {record.layer}"
    return f"{record.backbone} (fine-tuned)" if record.backbone else "the images"


def render_report(baseline, models, *, accuracy_chart, best_confusion, sections=()):
    """The Markdown report.

    Parameters
    ----------
    baseline : ModelRecord, the pixel baseline's
    models : list of ModelRecord, one per trained model
    accuracy_chart : str, the bar chart's path relative to the report
    best_confusion : callable, ``best_confusion(model_name) -> str``: the
        relative path of a model's confusion-matrix PNG
    sections : sequence of list of str
        Further sections, in order, each its Markdown lines (e.g.
        :func:`curves_section`).

    Returns
    -------
    str
    """
    ranked = rank([baseline, *models])
    best = ranked[0]
    lines = ["# featpipe report", ""]
    lines += _warnings(baseline, models)
    lines += [
        "How much are a pretrained CNN's features worth to shallow learners? Each model below "
        "was trained on features of the same images and scored on the same held-out test images; "
        "the pixel baseline is a random forest on the raw pixels.",
        "",
    ]
    lines += _data_section(baseline, models)
    lines += _results_table(ranked, baseline)
    lines += [f"![Test accuracy by model]({accuracy_chart})", ""]
    lines += [
        f"## Best model: {best.model}",
        "",
        f"Test accuracy {best.accuracy:.4f}, balanced accuracy {best.balanced_accuracy:.4f}, "
        f"macro F1 {best.macro_f1:.4f}; {_points(best.accuracy - baseline.accuracy)} points "
        "against the pixel baseline.",
        "",
        f"![Confusion matrix of {best.model}]({best_confusion(best.model)})",
        "",
    ]
    for section in sections:
        lines += section
    return "\n".join(lines)


def curves_section(summary, curves_png, embeddings):
    """"How many labels?": the learning curves, a table of mean ± std per size, and the one sentence.

    Parameters
    ----------
    summary : dict, ``reports/curves/curves.json`` (:func:`learning_curves.curves.summarise_curves`,
        plus ``random_weights``)
    curves_png : str, the curve's path relative to the report
    embeddings : list of (str, str), ``(features, relative path)`` of each t-SNE picture
    """
    lines = ["## How many labels?", ""]
    if summary.get("random_weights"):
        lines += [
            f"> **WARNING: random weights.** The features of {', '.join(summary['random_weights'])} come from "
            "randomly initialised weights: these curves show that the stage runs, not what pretrained features "
            "are worth with few labels.",
            "",
        ]
    lines += [
        f"Test accuracy against labelled training images per class: {summary['repeats']} stratified draws per "
        "size, the same draws for every model, each fit scored on the whole test split (mean ± standard "
        "deviation over the draws).",
        "",
        f"![Learning curves]({curves_png})",
        "",
    ]
    if summary.get("sentence"):
        lines += [summary["sentence"], ""]
    sizes = summary["per_class"]
    lines += ["| model | " + " | ".join(f"{size} / class" for size in sizes) + " |",
              "| --- | " + " | ".join("---:" for _ in sizes) + " |"]
    for name, curve in summary["models"].items():
        cells = [f"{size['mean']:.3f} ± {size['std']:.3f}" for size in curve["sizes"]]
        lines.append(f"| {name}{' (pixels)' if curve['baseline'] else ''} | " + " | ".join(cells) + " |")
    lines.append("")
    for note in summary.get("left_out", []):
        lines += [f"{note['per_class']} images per class left out: {note['reason']}.", ""]
    if embeddings:
        lines += ["What the classes look like in each space (t-SNE of the test images, coloured by class):", ""]
        lines += [f"![t-SNE of {features}]({path})" for features, path in embeddings] + [""]
    return lines


def _warnings(baseline, models):
    lines = []
    random = random_weight_sources(models)
    if random:
        lines += [
            f"> **WARNING: random weights.** {', '.join(random)}: from a network with "
            "randomly initialised weights (`extract.weights: none`), not pretrained ones. Their numbers show "
            "that the pipeline runs; they say nothing about what pretrained features are worth. "
            "Rerun with `extract.weights: imagenet` (or a weights file) for real results.",
            "",
        ]
    fingerprint = baseline.data.get("image_store_fingerprint")
    stale = sorted(m.model for m in models if m.data.get("image_store_fingerprint") != fingerprint)
    if stale:
        lines += [
            f"> **WARNING: mixed data.** {', '.join(stale)} came from another image store than the pixel "
            "baseline; rerun `dvc repro` (or `featpipe train`) so that every model sees the same images.",
            "",
        ]
    return lines


def _data_section(baseline, models):
    data = baseline.data
    classes = list(baseline.per_class)
    features = sorted({(m.backbone, m.layer, str(m.weights), m.n_features) for m in models if m.input == "features"})
    learned = [m for m in models if m.input == "images"]
    lines = [
        "## Data",
        "",
        f"- Data set: {data.get('source', 'unknown')}, {len(classes)} classes ({', '.join(classes)})",
        f"- Training images: {baseline.n_train}{_subset(data.get('train_size'))}; "
        f"test images: {baseline.n_test}{_subset(data.get('test_size'))}",
    ]
    for backbone, layer, weights, dim in features:
        lines.append(f"- Features: {backbone} `{layer}` ({dim} dimensions), weights: {weights}")
    if not features:
        lines.append("- Features: none trained yet (only the pixel baseline)")
    for model in learned:
        weights = f", weights: {model.weights}" if model.backbone else ""
        lines.append(f"- Learned from {source(model)}: {model.model}{weights}")
    lines.append(f"- Pixel baseline: {baseline.n_features} pixels per image, scaled to [0, 1]")
    return lines + [""]


def _subset(size):
    return " (stratified subset)" if size not in (None, -1) else " (all)"


def _results_table(ranked, baseline):
    lines = [
        "## Results",
        "",
        "Sorted by test accuracy; *vs pixels* is the difference to the pixel baseline in percentage points.",
        "",
        "| # | model | features | weights | classifier | accuracy | vs pixels | balanced acc. | macro F1 | fit s | predict s |",
        "| ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for position, record in enumerate(ranked, 1):
        is_baseline = record is baseline
        features = f"{record.backbone} `{record.layer}`" if record.input == "features" else source(record)
        has_weights = record.input == "features" or (record.input == "images" and record.backbone)
        weights = str(record.weights) + (" (random)" if record.random_weights else "") if has_weights else "—"
        delta = "baseline" if is_baseline else _points(record.accuracy - baseline.accuracy)
        lines.append(
            f"| {position} | {record.model} | {features} | {weights} | {record.classifier} "
            f"| {record.accuracy:.4f} | {delta} | {record.balanced_accuracy:.4f} "
            f"| {record.macro_f1:.4f} | {record.fit_seconds:.1f} | {record.predict_seconds:.2f} |"
        )
    return lines + [""]


def _points(difference):
    return f"{100 * difference:+.1f}"


def explanations_section(grids, random_weights, marked=()):
    """"Where the models look": the explanation grids of the best feature model and the pixel forest.

    Parameters
    ----------
    grids : list of (str, str), ``(model name, relative path of its PNG)``
    random_weights : bool, a backbone behind the maps has random weights
    marked : sequence of str, the models whose Grad-CAM maps read their conv layer through a Flatten layer
    """
    lines = ["## Where the models look", ""]
    if not grids:
        return lines + ["Not explained yet: run `featpipe explain` (or `dvc repro`).", ""]
    if random_weights:
        lines += ["> **WARNING: random weights.** These maps explain an untrained backbone.", ""]
    lines += [
        "The same test images for every model; each map explains the true class. Occlusion and LIME apply to "
        "every model (red: evidence for the class); Grad-CAM, guided backprop and guided Grad-CAM only where "
        "the model is differentiable from pixel to class (the dense head and the CNNs). Every model's maps, "
        "as numbers, are in `explanations/<model>.h5`.",
        "",
    ]
    if marked:
        lines += [
            f"Grad-CAM and guided Grad-CAM of {', '.join(marked)} are marked * (in the grid, and as the `caveat` "
            "attribute of their maps): the class score reads the conv layer through a Flatten layer, which gives "
            "every position weights of its own, and Grad-CAM averages the gradients over positions, so evidence "
            "that lies in where a feature sits does not show. Compare them with occlusion and LIME.",
            "",
        ]
    for name, path in grids:
        lines += [f"### {name}", "", f"![Explanations of {name}]({path})", ""]
    return lines


def training_section(pictures):
    """"How the image models learned": each CNN's training curves (``pictures``: (model, relative path))."""
    if not pictures:
        return []
    lines = [
        "## How the image models learned",
        "",
        "Loss and accuracy per epoch on the training images and on the validation split held out of them; "
        "early stopping kept the epoch with the lowest validation loss.",
        "",
    ]
    for name, path in pictures:
        lines += [f"![Training curves of {name}]({path})", ""]
    return lines
