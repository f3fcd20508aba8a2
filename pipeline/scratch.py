"""The `scratch` stage: a small CNN trained from scratch on the stored images, beside the frozen features.

The course's tricks of the trade, each a ``scratch`` setting: input
normalisation, batch norm, dropout, augmentation as Keras layers inside the
model, Adam with a learning-rate schedule, early stopping on a stratified
validation split (:mod:`classifiers.cnn.scratch`). Writes what ``train`` writes
(:mod:`classifiers.records`)::

    data/models/scratch-cnn/model.keras, model.json   (the model takes the uint8 images as stored)
    reports/metrics/scratch-cnn.json                   (plus epochs run, best epoch, the training curve)
    reports/plots/scratch-cnn-confusion.csv, .png
    reports/dvclive/scratch-cnn/                       (DVCLive: metrics.json, plots/metrics/ per epoch)
"""

import click

from pipeline import paths
from pipeline.image_models import load_images, write_image_model
from pipeline.options import images_option, params_option
from pipeline.scratch_params import scratch_settings
from pipeline.stage import keras_verbosity, stage_params

NAME = paths.SCRATCH_MODEL


def record_names(params):
    """The model this stage trains."""
    return [NAME]


@click.command()
@params_option
@images_option
def scratch(params_path, images):
    """Train a small CNN from scratch on the stored images (the course's tricks of the trade)."""
    from classifiers.cnn.live import epoch_logger, training_log
    from classifiers.cnn.scratch import fit_scratch_cnn
    from classifiers.cnn.training import evaluate

    params = stage_params(params_path)
    settings = scratch_settings(params)
    train, test, class_names, data = load_images(images)
    click.echo(f"scratch: a CNN on {len(train[1])} images of {'x'.join(map(str, train[0].shape[1:]))}", err=True)
    with training_log(paths.training_log(NAME)) as live:
        model, history = fit_scratch_cnn(*train, len(class_names), **settings, seed=params["seed"],
                                         verbose=keras_verbosity(), callbacks=[epoch_logger(live)])
        predicted, metrics = evaluate(model, history, train, test, class_names)
        live.log_metric("test_accuracy", metrics["accuracy"], plot=False)
    click.echo(write_image_model(
        NAME, "cnn", model, metrics, predicted, test[1], class_names, settings, params["seed"], data, train[0].shape[1:]
    ))
