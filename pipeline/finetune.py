"""The `finetune` stage: a pretrained backbone fine-tuned on the stored images, beside its frozen features.

One model per entry of ``finetune.backbones`` (``featpipe finetune --backbone
vgg16``; DVC makes a stage per entry, none by default, since on a CPU it is
slow): the backbone without its top and a new head, the head trained first
with the backbone frozen, then the last ``finetune.unfreeze`` blocks too at a
lower rate (:mod:`classifiers.cnn.finetune`). Images are resized and
preprocessed exactly as ``extract`` does (the same layer), with the weights
``extract.weights`` names, never swapped for others. Writes what ``scratch``
writes, under ``<backbone>-finetune``.
"""

import click

from plumbing.errors import FeatpipeError
from pipeline import paths
from pipeline.options import images_option, params_option
from pipeline.finetune_params import check_finetune_settings, finetune_settings
from pipeline.image_models import load_images, write_image_model
from pipeline.stage import keras_verbosity, option_key, stage_params


def record_names(params):
    """The models this stage trains: one per ``finetune.backbones`` entry."""
    return [paths.finetuned_model(backbone) for backbone in params["finetune"]["backbones"]]


@click.command()
@params_option
@images_option
@click.option("--backbone", required=True, help="A registry backbone (see `featpipe backbones`), e.g. vgg16.")
def finetune(params_path, images, backbone):
    """Fine-tune a pretrained backbone on the stored images: the head first, then its last blocks."""
    from classifiers.cnn.finetune import finetunable_backbone, fit_finetune
    from classifiers.cnn.live import epoch_logger, training_log
    from classifiers.cnn.training import evaluate
    from features.weights import RANDOM_WEIGHTS_WARNING

    params = stage_params(params_path)
    settings = params["finetune"]
    with option_key("--backbone"):
        finetunable_backbone(backbone)
    check_finetune_settings(backbone, settings)
    weights = params["extract"]["weights"]
    if str(weights) == "none":
        click.echo(RANDOM_WEIGHTS_WARNING, err=True)
    train, test, class_names, data = load_images(images)
    click.echo(f"finetune: {backbone} ({weights} weights) on {len(train[1])} images", err=True)
    with training_log(paths.training_log(paths.finetuned_model(backbone))) as live:
        try:
            finetuned, history = fit_finetune(
                *train, len(class_names), backbone, weights=weights, seed=params["seed"], verbose=keras_verbosity(),
                callbacks=[epoch_logger(live)], **finetune_settings(settings),
            )
        except FeatpipeError as error:
            raise FeatpipeError(f"finetune {backbone}: {error}") from None
        predicted, metrics = evaluate(finetuned.model, history, train, test, class_names)
        live.log_metric("test_accuracy", metrics["accuracy"], plot=False)
    click.echo(write_image_model(
        paths.finetuned_model(backbone), "finetune", finetuned.model, metrics, predicted, test[1], class_names, settings,
        params["seed"], data, train[0].shape[1:], backbone=backbone, weights=finetuned.weights, random_weights=finetuned.random_weights,
    ))
