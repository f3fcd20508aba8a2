"""The `report` stage: ``reports/report.md`` and the accuracy chart, from the metrics files.

It reads the pixel baseline's metrics and those of every model that params
name (each ``extract.backbones`` entry × ``train.classifiers``), so a model
left over from an earlier configuration never sneaks into the table.
"""

import os

import click

from features.atomic import atomic_output
from features.errors import FeatpipeError
from pipeline import paths
from pipeline.options import params_option, read_params


def expected_metrics(params):
    """The metrics file of every model params ask for, in params order."""
    return [
        paths.metrics_file(paths.model_name(features, classifier))
        for features in paths.feature_files(params["extract"]["backbones"])
        for classifier in params["train"]["classifiers"]
    ]


def read_metrics(path, stage):
    """One metrics record; a missing file names the stage that writes it."""
    from classifiers.evaluation import read_json

    if not os.path.exists(path):
        raise FeatpipeError(f"metrics file not found: {path} (run `featpipe {stage}` first)")
    return read_json(path)


def relative_to_report(path):
    """``path`` as the report links it (relative to the report's folder, with forward slashes)."""
    return os.path.relpath(path, paths.REPORT_FILE.parent).replace(os.sep, "/")


@click.command()
@params_option
@click.option(
    "--metrics", "metrics_paths", multiple=True, type=click.Path(dir_okay=False),
    help="A model's metrics file to report (repeatable); default: every backbone x classifier in params.",
)
def report(params_path, metrics_paths):
    """Write reports/report.md: every model against the pixel baseline, sorted by accuracy."""
    # Imported here, not at the top, so that `featpipe --help` does not pay for matplotlib.
    from classifiers.plots import save_accuracy_chart
    from classifiers.reporting import random_weight_sources, rank, render_report

    params = read_params(params_path)
    baseline = read_metrics(paths.BASELINE_METRICS, "baseline")
    models = [read_metrics(path, "train") for path in (metrics_paths or expected_metrics(params))]
    ranked = rank([baseline, *models])
    save_accuracy_chart(
        paths.ACCURACY_CHART,
        [record["model"] for record in ranked],
        [record["accuracy"] for record in ranked],
        baseline=baseline["model"],
        highlight={record["model"] for record in models if record.get("random_weights")},
    )
    text = render_report(
        baseline, models,
        accuracy_chart=relative_to_report(paths.ACCURACY_CHART),
        best_confusion=lambda name: relative_to_report(paths.confusion_files(name)[1]),
    )
    with atomic_output(paths.REPORT_FILE) as aside:
        aside.write_text(text)
    random = random_weight_sources(models)
    if random:
        click.echo(f"report: WARNING: features from random weights ({', '.join(random)}); the report says so at the top", err=True)
    click.echo(f"report: {len(models)} model(s) and the pixel baseline; best {ranked[0]['model']} "
               f"({ranked[0]['accuracy']:.4f}) -> {paths.REPORT_FILE}")
