"""The `explain` stage: where does each model look, on the same test images?

A seeded sample of ``explain.per_class`` test images of every class; for
every model the params ask the training stages for (the pixel forest, each
classifier on each feature file, the CNNs on the images) the maps of every
method in ``explain.methods`` that applies to it (:mod:`explanations`).
Every model is loaded from its folder by :func:`classifiers.load_model`, the
one ``featpipe predict`` uses: the images go through the backbone exactly as
``extract`` put them through it (the same registry entry, resize and
rescale, weights checked by their SHA-256, precision). A model the params
ask for but that was not trained yet is named on stderr and left out.
Writes, per model::

    reports/explanations/<model>.h5    maps/<method> float32 [N, H, W], ids, labels, predicted,
                                       probabilities (or decision_values), settings and provenance
    reports/explanations/<model>.png   each image with its maps as overlays
"""

import click

from pipeline import paths
from pipeline.inputs import store_description
from pipeline.options import images_option, params_option
from pipeline.stage import expected_records, params_key, stage_params
from plumbing.errors import FeatpipeError


def checked_methods(settings):
    from explanations import check_methods

    with params_key("explain.methods"):
        return check_methods(settings["methods"])


def sample_images(images, per_class, seed):
    """``(images, labels, ids)`` of ``per_class`` test images of every class, chosen by ``seed``."""
    from storage.image_store import ImageStore
    from sources.subsets import per_class_sample

    with ImageStore(images) as store:
        labels = store.labels("test")
        rows = per_class_sample(labels, per_class, seed)
        return store.images("test")[rows], labels[rows], [store.ids("test")[row] for row in rows]


def check_occlusion_settings(settings, image_shape):
    """The occlusion patch fits the images and its stride leaves no pixel uncovered, or one line naming the key."""
    from explanations.occlusion import check_patch, check_stride

    patch, stride = settings["occlusion"]["patch"], settings["occlusion"]["stride"]
    with params_key("explain.occlusion.patch"):
        check_patch(image_shape[:2], patch)
    with params_key("explain.occlusion.stride"):
        check_stride(patch, stride)


def trained_models(params):
    """``(trained, missing)``: the ``(name, stage)`` of every model the params ask for whose record exists, and the others.

    A record is written last (:func:`classifiers.records.write_model_outputs`), so its presence means the model was trained.
    """
    trained, missing = [], []
    for name, stage in expected_records(params):
        (trained if paths.metrics_file(name).exists() else missing).append((name, stage))
    return trained, missing


def load_models(names, params, store):
    """Each trained model from its folder (:func:`classifiers.load_model`), refused unless trained on ``store``.

    Everything loads before any map is made. Feature models on one feature
    file share one backbone, which remembers the rows it computed: occlusion
    and LIME perturb the images alike for every model.
    """
    from classifiers.loading import Backbones, load_model

    extract = params["extract"]
    backbones = Backbones(batch_size=extract["batch_size"], device=extract["device"], remember_rows=True)
    models = []
    for name, stage in names:
        folder = paths.MODELS_DIR / name
        model = load_model(folder, backbones=backbones)
        if model.record.data.get("image_store_fingerprint") != store["image_store_fingerprint"]:
            raise FeatpipeError(f"{folder} was trained on another image store than {store['path']}; rerun `featpipe {stage}`")
        models.append(model)
    return models


def explain_model(model, images, labels, ids, settings, class_names, seed):
    """Every applicable method's maps of ``model``; writes its .h5 and .png; the seconds per method."""
    from explanations import applicable_methods, explain, save_explanation_grid, write_explanations

    methods = applicable_methods(model, settings["methods"])
    found = explain(
        model, images, labels, methods, occlusion=dict(settings["occlusion"]),
        lime={**settings["lime"], "seed": seed},
    )
    h5_path, png_path = paths.explanation_files(model.name)
    write_explanations(h5_path, found, ids, class_names)
    save_explanation_grid(png_path, images, found, class_names, title=f"{model.name}: where it looks")
    return found.seconds


@click.command()
@params_option
@images_option
def explain(params_path, images):
    """Explain every trained model on the same test images: occlusion, LIME, Grad-CAM, guided backprop."""
    params = stage_params(params_path)
    settings = params["explain"]
    checked_methods(settings)
    seed = params["seed"] if settings["seed"] is None else settings["seed"]
    store = store_description(images)
    sample, labels, ids = sample_images(images, settings["per_class"], seed)
    check_occlusion_settings(settings, sample.shape[1:])
    trained, missing = trained_models(params)
    models = load_models(trained, params, store)
    if missing:
        listed = ", ".join(f"{name} (`featpipe {stage}`)" for name, stage in missing)
        click.echo(f"explain: not trained yet, so not explained: {listed}", err=True)
    click.echo(f"explain: {len(models)} model(s) on {len(sample)} test images", err=True)
    for model in models:
        seconds = explain_model(model, sample, labels, ids, settings, store["class_names"], seed)
        timing = ", ".join(f"{method} {value:.1f} s" for method, value in seconds.items())
        click.echo(f"{model.name}: {timing} -> {paths.explanation_files(model.name)[0]}")
