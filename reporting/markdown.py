"""``report.md``: every model against the pixel baseline, from their metrics records.

Pure text in, text out: :func:`render_report` takes the
:class:`~classifiers.records.ModelRecord` of every model and returns Markdown.
"""

from pathlib import PurePath


def rank(records):
    """Records sorted by test accuracy, best first (ties by name, so the order is stable)."""
    return sorted(records, key=lambda record: (-record.accuracy, record.model))


def random_weight_sources(records):
    """What came from random weights: ``backbone layer`` of feature sets, ``backbone (fine-tuned)``, sorted."""
    return sorted({source(r) for r in records if r.random_weights})


def backbone_name(backbone):
    """A backbone as people read it: the registry name, or a model file's name without its folders."""
    return PurePath(backbone).name if str(backbone).endswith(".keras") else backbone


def source(record):
    """What a model learned from, for people: ``raw pixels``, ``vgg16 fc2``, ``vgg16 (fine-tuned)``, ``the images``."""
    if record.input == "pixels":
        return "raw pixels"
    if record.input == "features":
        return f"{backbone_name(record.backbone)} {record.layer}"
    return f"{backbone_name(record.backbone)} (fine-tuned)" if record.backbone else "the images"


def render_report(baseline, models, *, accuracy_chart, best_confusion, model_folder=None, sections=(), missing=()):
    """The Markdown report.

    Parameters
    ----------
    baseline : ModelRecord or None, the pixel baseline's (None when it was not trained)
    models : list of ModelRecord, one per trained model
    accuracy_chart : str, the bar chart's path relative to the report
    best_confusion : callable, ``best_confusion(model_name) -> str``: the
        relative path of a model's confusion-matrix PNG
    model_folder : callable or None, ``model_folder(model_name) -> str``: the
        folder ``featpipe predict --model`` takes (default ``data/models/<name>``)
    sections : sequence of list of str
        Further sections, in order, each its Markdown lines (e.g.
        :func:`curves_section`).
    missing : sequence of (str, str)
        ``(model name, stage)`` of the models asked for but not trained yet.

    Returns
    -------
    str
    """
    model_folder = model_folder or (lambda name: f"data/models/{name}")
    ranked = rank(([baseline] if baseline else []) + list(models))
    best = ranked[0]
    lines = ["# featpipe report", ""]
    lines += _warnings(baseline, models)
    lines += missing_note(missing)
    lines += [
        "How much are a pretrained CNN's features worth to shallow learners? Each model below "
        "was trained on features of the same images and scored on the same held-out test images; "
        "the pixel baseline is a random forest on the raw pixels.",
        "",
    ]
    lines += _data_section(baseline, models)
    lines += _results_table(ranked, baseline)
    lines += features_section(models)
    lines += [f"![Test accuracy by model]({accuracy_chart})", ""]
    against = (f"; {_points(best.accuracy - baseline.accuracy)} points against the pixel baseline" if baseline
               else "; no pixel baseline to compare with yet (`featpipe baseline`)")
    lines += [
        f"## Best model: {best.model}",
        "",
        f"Test accuracy {best.accuracy:.4f}, balanced accuracy {best.balanced_accuracy:.4f}, "
        f"macro F1 {best.macro_f1:.4f}{against}.",
        "",
        f"Apply it to new images: `featpipe predict --model {model_folder(best.model)} photos/ --out predictions.csv`",
        "",
        f"![Confusion matrix of {best.model}]({best_confusion(best.model)})",
        "",
    ]
    for section in sections:
        lines += section
    return "\n".join(lines)


def missing_note(missing):
    """A note naming the models the params ask for that are not trained yet, with the command for each."""
    if not missing:
        return []
    names = ", ".join(f"{name} (`featpipe {stage}`)" for name, stage in missing)
    return [f"> **Not trained yet:** {names}. The report shows the models that are; `dvc repro` trains them all.", ""]


def features_section(models):
    """"Which features?": every classifier on every feature file, the best cell in bold.

    Only with two or more feature files (several backbones, or several
    layers of one); the classifiers' columns keep the order of ``models``.
    """
    cells = {}
    for record in models:
        if record.input == "features":
            cells.setdefault(record.features, {})[record.classifier] = record
    if len(cells) < 2:
        return []
    heads = list(dict.fromkeys(record.classifier for row in cells.values() for record in row.values()))
    best = rank([record for row in cells.values() for record in row.values()])[0]
    lines = [
        "## Which features?",
        "",
        "Test accuracy of every classifier on every feature file; the best in bold, and each file's best head.",
        "",
        "| features | backbone, layer | dimensions | " + " | ".join(heads) + " | best head |",
        "| --- | --- | ---: | " + " | ".join("---:" for _ in heads) + " | --- |",
    ]
    for features, row in cells.items():
        some = next(iter(row.values()))
        scores = [("**{:.4f}**" if row[head] is best else "{:.4f}").format(row[head].accuracy) if head in row else "—"
                  for head in heads]
        lines.append(f"| {features} | {backbone_name(some.backbone)} `{some.layer}` | {some.n_features} | "
                     + " | ".join(scores) + f" | {rank(list(row.values()))[0].classifier} |")
    return lines + [""]


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
    lines += [sentence for key in ("sentence", "share_sentence", "crossover_sentence") if summary.get(key)
              for sentence in (summary[key], "")]
    header = _size_headers(summary)
    lines += ["| model | " + " | ".join(header) + " |", "| --- | " + " | ".join("---:" for _ in header) + " |"]
    for name, curve in summary["models"].items():
        kind = " (pixels)" if curve["baseline"] else " (CNN on the images)" if curve.get("cnn") else ""
        lines.append(f"| {name}{kind} | " + " | ".join(_size_cells(curve)) + " |")
    lines.append("")
    lines += best_heads_table(summary)
    left_out = summary.get("left_out", [])
    if left_out:
        sizes = ", ".join(str(note["per_class"]) for note in left_out)
        lines += [f"{sizes} images per class left out: {left_out[0]['reason']}.", ""]
    if embeddings:
        lines += ["What the classes look like in each space (t-SNE of the test images, coloured by class):", ""]
        lines += [f"![t-SNE of {features}]({path})" for features, path in embeddings] + [""]
    return lines


def _size_headers(summary):
    """``5 / class`` for a drawn size, ``all (2000)`` for the whole training split."""
    first = next(iter(summary["models"].values()))["sizes"]
    return [f"{size['per_class']} / class" if isinstance(size["per_class"], int) else f"all ({size['n_train']})"
            for size in first]


def _size_cells(curve):
    """Mean ± std over the draws; the mean alone for a single fit (the whole split)."""
    return [f"{size['mean']:.3f} ± {size['std']:.3f}" if len(size["accuracy"]) > 1 else f"{size['mean']:.3f}"
            for size in curve["sizes"]]


def best_heads_table(summary):
    """The best head of each feature file, compared size by size (two or more feature files).

    A feature file's best head is its model with the highest mean accuracy at the largest size.
    """
    files = {}
    for name, curve in summary["models"].items():
        if not curve["baseline"] and not curve.get("cnn"):
            files.setdefault(curve["features"], []).append((name, curve))
    if len(files) < 2:
        return []
    header = _size_headers(summary)
    lines = ["Which features? The best head of each feature file (by its mean at the largest size):", "",
             "| features | best head | " + " | ".join(header) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in header) + " |"]
    for features, curves in files.items():
        name, curve = max(curves, key=lambda item: (item[1]["sizes"][-1]["mean"], item[0]))
        lines.append(f"| {features} | {curve['classifier']} | " + " | ".join(_size_cells(curve)) + " |")
    return lines + [""]


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
    reference = baseline or (models[0] if models else None)
    fingerprint = reference.data.get("image_store_fingerprint") if reference else None
    stale = sorted(m.model for m in models if m.data.get("image_store_fingerprint") != fingerprint)
    if stale:
        against = "the pixel baseline" if baseline else reference.model
        lines += [
            f"> **WARNING: mixed data.** {', '.join(stale)} came from another image store than {against}; "
            "rerun `dvc repro` (or `featpipe train`) so that every model sees the same images.",
            "",
        ]
    return lines


def _data_section(baseline, models):
    reference = baseline or models[0]
    data = reference.data
    classes = list(reference.per_class)
    features = sorted({(backbone_name(m.backbone), m.layer, str(m.weights), m.n_features)
                       for m in models if m.input == "features"})
    learned = [m for m in models if m.input == "images"]
    lines = [
        "## Data",
        "",
        f"- Data set: {data.get('source', 'unknown')}, {len(classes)} classes ({', '.join(classes)})",
        f"- Training images: {reference.n_train}{_subset(data.get('train_size'))}; "
        f"test images: {reference.n_test}{_subset(data.get('test_size'))}",
    ]
    for backbone, layer, weights, dim in features:
        lines.append(f"- Features: {backbone} `{layer}` ({dim} dimensions), weights: {weights}")
    if not features:
        lines.append("- Features: none trained yet (only the pixel baseline)")
    for model in learned:
        weights = f", weights: {model.weights}" if model.backbone else ""
        lines.append(f"- Learned from {source(model)}: {model.model}{weights}")
    if baseline:
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
        features = f"{backbone_name(record.backbone)} `{record.layer}`" if record.input == "features" else source(record)
        has_weights = record.input == "features" or (record.input == "images" and record.backbone)
        weights = str(record.weights) + (" (random)" if record.random_weights else "") if has_weights else "—"
        delta = "baseline" if is_baseline else _points(record.accuracy - baseline.accuracy) if baseline else "—"
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
