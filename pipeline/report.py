"""The `report` stage: ``reports/report.md`` and the accuracy chart, from the model records.

It reports the records that the params ask the training stages for
(:func:`pipeline.stage.expected_records`), so a model left over from an
earlier configuration never sneaks into the table. A model asked for but not
trained yet (no metrics file) is named in the report and on stderr, and the
report shows the others; a metrics file that is there but is not a record
stops it.
"""

import os

import click

from plumbing.atomic import atomic_output
from plumbing.errors import FeatpipeError
from pipeline import paths
from pipeline.options import params_option
from pipeline.stage import expected_records, stage_params


def relative_to_report(path):
    """``path`` as the report links it (relative to the report's folder, with forward slashes)."""
    return os.path.relpath(path, paths.REPORT_FILE.parent).replace(os.sep, "/")


def read_records(params, metrics_paths=()):
    """The records to report: ``(baseline, models, missing)``.

    ``baseline`` is the pixel baseline's record (None when it is not trained
    yet), ``models`` the others' (those named in ``metrics_paths``, which must
    exist, else every expected one that exists), ``missing`` the
    ``(model name, stage)`` of every expected one without a metrics file.
    """
    from classifiers.records import read_record

    expected = [(paths.BASELINE_MODEL, "baseline")] if metrics_paths else expected_records(params)
    found, missing = {}, []
    for name, stage in expected:
        if paths.metrics_file(name).exists():
            found[name] = read_record(paths.metrics_file(name), stage)
        else:
            missing.append((name, stage))
    models = [read_record(path, "train") for path in metrics_paths] or [
        record for name, record in found.items() if name != paths.BASELINE_MODEL]
    if not models and paths.BASELINE_MODEL not in found:
        raise FeatpipeError(f"nothing to report: no metrics file of the models the params ask for in {paths.METRICS_DIR} "
                            "(run `dvc repro`, or `featpipe baseline` and `featpipe train`)")
    return found.get(paths.BASELINE_MODEL), models, missing


def learning_curves():
    """The "How many labels?" section from ``reports/curves/curves.json``, or a line saying how to get it."""
    import json

    from reporting.markdown import curves_section

    try:
        summary = json.loads(paths.CURVES_JSON.read_text())
    except FileNotFoundError:
        return ["## How many labels?", "", "Not measured yet: run `featpipe curves` (or `dvc repro`).", ""]
    except (UnicodeDecodeError, ValueError):
        raise FeatpipeError(f"{paths.CURVES_JSON} is not valid JSON; rerun `featpipe curves`") from None
    if not isinstance(summary, dict) or not {"per_class", "repeats", "models"} <= set(summary):
        raise FeatpipeError(f"{paths.CURVES_JSON} is not what `featpipe curves` writes; rerun it")
    features = sorted({curve["features"] for curve in summary["models"].values()}, key=lambda name: name != "pixels")
    embeddings = [(name, relative_to_report(paths.embedding_png(name))) for name in features if paths.embedding_png(name).exists()]
    return curves_section(summary, relative_to_report(paths.CURVES_PNG), embeddings)


def training_curves(models):
    """Draw the training curves of every model trained by epochs (the CNNs); their section of the report."""
    from reporting.plots import save_training_curves
    from reporting.markdown import training_section

    pictures = []
    for record in models:
        curve = (record.training or {}).get("curve")
        if curve:
            save_training_curves(paths.training_png(record.model), record.model, curve)
            pictures.append((record.model, relative_to_report(paths.training_png(record.model))))
    return training_section(pictures)


def where_the_models_look(baseline, models):
    """The explanation grids of the best feature model and of the pixel forest, those that exist,
    and the models whose maps carry a caveat (:mod:`explanations.caveats`)."""
    from explanations.caveats import read_caveats
    from reporting.markdown import explanations_section, rank

    features = [record for record in models if record.input == "features"]
    shown = ([rank(features)[0]] if features else []) + ([baseline] if baseline else [])
    grids = [(record.model, paths.explanation_files(record.model)[1]) for record in shown]
    grids = [(name, relative_to_report(path)) for name, path in grids if path.exists()]
    explained = [paths.explanation_files(record.model)[0] for record in ([baseline] if baseline else []) + models]
    marked = [path.stem for path in explained if path.exists() and read_caveats(path)]
    return explanations_section(grids, any(record.random_weights for record in shown), marked)


@click.command()
@params_option
@click.option(
    "--metrics", "metrics_paths", multiple=True, type=click.Path(dir_okay=False),
    help="A model's metrics file to report (repeatable); default: every model the params ask for.",
)
def report(params_path, metrics_paths):
    """Write reports/report.md: every model against the pixel baseline, sorted by accuracy."""
    # Imported here, not at the top, so that `featpipe --help` does not pay for matplotlib.
    from reporting.plots import save_accuracy_chart
    from reporting.markdown import random_weight_sources, rank, render_report

    params = stage_params(params_path)
    baseline, models, missing = read_records(params, metrics_paths)
    ranked = rank(([baseline] if baseline else []) + models)
    save_accuracy_chart(
        paths.ACCURACY_CHART,
        [record.model for record in ranked],
        [record.accuracy for record in ranked],
        baseline=baseline.model if baseline else None,
        highlight={record.model for record in models if record.random_weights},
    )
    text = render_report(
        baseline, models,
        accuracy_chart=relative_to_report(paths.ACCURACY_CHART),
        best_confusion=lambda name: relative_to_report(paths.confusion_files(name)[1]),
        model_folder=lambda name: (paths.MODELS_DIR / name).as_posix(),
        sections=[training_curves(models), learning_curves(), where_the_models_look(baseline, models)],
        missing=missing,
    )
    with atomic_output(paths.REPORT_FILE) as aside:
        aside.write_text(text)
    random = random_weight_sources(models)
    if random:
        click.echo(f"report: WARNING: features from random weights ({', '.join(random)}); the report says so at the top", err=True)
    if missing:
        names = ", ".join(f"{name} (`featpipe {stage}`)" for name, stage in missing)
        click.echo(f"report: not trained yet, left out of the report: {names}", err=True)
    baseline_part = " and the pixel baseline" if baseline else " (no pixel baseline yet)"
    click.echo(f"report: {len(models)} model(s){baseline_part}; best {ranked[0].model} "
               f"({ranked[0].accuracy:.4f}) -> {paths.REPORT_FILE}")
