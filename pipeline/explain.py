"""The `explain` stage: where does each model look, on the same test images?

A seeded sample of ``explain.per_class`` test images of every class; for
every model the params ask the training stages for (the pixel forest, each
classifier on each feature file, the CNNs on the images) the maps of every
method in ``explain.methods`` that applies to it (:mod:`explanations`).
The images go through the backbone exactly as ``extract`` put them through
it: the same registry entry, resize and rescale, weights (checked by their
SHA-256) and precision. Writes, per model::

    reports/explanations/<model>.h5    maps/<method> float32 [N, H, W], ids, labels, predicted,
                                       probabilities (or decision_values), settings and provenance
    reports/explanations/<model>.png   each image with its maps as overlays
"""

import click

from plumbing.errors import FeatpipeError
from pipeline import paths
from pipeline.inputs import store_description
from pipeline.options import images_option, params_option
from pipeline.stage import expected_records, params_key, stage_params


def checked_methods(settings):
    from explanations import check_methods

    with params_key("explain.methods"):
        return check_methods(settings["methods"])


def sample_images(images, per_class, seed):
    """``(images, labels, ids)`` of ``per_class`` test images of every class, chosen by ``seed``."""
    from learning_curves.curves import draw_subsets
    from features.image_store import ImageStore

    with ImageStore(images) as store:
        labels = store.labels("test")
        fewest = int(min(labels.tolist().count(label) for label in set(labels.tolist())))
        rows = draw_subsets(labels, [min(per_class, fewest)], 1, seed).draws[0].rows
        return store.images("test")[rows], labels[rows], [store.ids("test")[row] for row in rows]


def check_patch(settings, image_shape):
    patch, (height, width) = settings["occlusion"]["patch"], image_shape[:2]
    if patch > min(height, width):
        raise FeatpipeError(f"params: explain.occlusion.patch: {patch} is larger than the {height}x{width} images")


class ModelLoader:
    """Each trained model as an :class:`~explanations.ExplainableModel`, from its files.

    Refuses, before any map is made, a model whose folder is missing or was
    trained on another image store. Feature models on one feature file share
    one backbone (:class:`~explanations.SharedExtractor`).
    """

    def __init__(self, params, store):
        self.params, self.store = params, store
        self._extractors = {}

    def load(self, name, stage):
        from classifiers.records import read_record

        record = read_record(paths.metrics_file(name), stage)
        card = self._card(name, stage)
        model_file = paths.MODELS_DIR / name / card["model_file"]
        metadata = {"features": record.features, "classifier": record.classifier}
        if record.input == "pixels":
            return self._pixels(name, model_file, metadata)
        if record.input == "features":
            return self._features(name, record, card, model_file, metadata)
        return self._images(name, card, model_file, record, metadata)

    def _card(self, name, stage):
        import json

        path = paths.MODELS_DIR / name / "model.json"
        try:
            card = json.loads(path.read_text())
        except FileNotFoundError:
            raise FeatpipeError(f"model folder {path.parent} is missing or incomplete (run `featpipe {stage}`)") from None
        except ValueError:
            raise FeatpipeError(f"{path} is not valid JSON; rerun `featpipe {stage}`") from None
        fingerprint = card.get("data", {}).get("image_store_fingerprint")
        if fingerprint != self.store["image_store_fingerprint"]:
            raise FeatpipeError(
                f"{path.parent} was trained on another image store than {self.store['path']}; rerun `featpipe {stage}`"
            )
        return card

    def _pixels(self, name, model_file, metadata):
        from explanations import pixel_forest_model

        return pixel_forest_model(_load_joblib(model_file), name=name, metadata=metadata)

    def _features(self, name, record, card, model_file, metadata):
        from explanations import feature_model
        from classifiers.cnn.training import load_model

        extractor = self._extractor(record.feature_file)
        classifier = load_model(model_file) if model_file.suffix == ".keras" else _load_joblib(model_file)
        return feature_model(extractor, classifier, name=name, classes=card["output_labels"], metadata=metadata)

    def _images(self, name, card, model_file, record, metadata):
        from explanations import keras_classifier_model
        from classifiers.cnn.training import load_model

        metadata.update(backbone=record.backbone, weights=record.weights, random_weights=record.random_weights)
        return keras_classifier_model(load_model(model_file), card["output_labels"], name=name, metadata=metadata)

    def _extractor(self, feature_file):
        """The backbone that made ``feature_file``, built once, with the weights it was made with."""
        from explanations import SharedExtractor
        from features.engine import FeatureExtractor
        from features.feature_store import complete_metadata

        if feature_file not in self._extractors:
            made = complete_metadata(feature_file)
            extract = self.params["extract"]
            extractor = FeatureExtractor(
                backbone=made["backbone"], layer=made["layer"],
                weights="imagenet" if made["weights"] == "model file" else made["weights"],
                batch_size=extract["batch_size"], precision=made["precision"], device=extract["device"], seed=made["seed"],
            ).fit()
            if extractor.weights_sha256_ != made["weights_sha256"]:
                raise FeatpipeError(
                    f"{feature_file} was made with other weights than {made['weights']} gives now "
                    f"(SHA-256 {made['weights_sha256'][:12]} vs {extractor.weights_sha256_[:12]}); rerun `featpipe extract`"
                )
            self._extractors[feature_file] = SharedExtractor(extractor)
        return self._extractors[feature_file]


def _load_joblib(path):
    import joblib

    return joblib.load(path)


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
    check_patch(settings, sample.shape[1:])
    loader = ModelLoader(params, store)
    models = [loader.load(name, stage) for name, stage in expected_records(params)]
    click.echo(f"explain: {len(models)} model(s) on {len(sample)} test images", err=True)
    for model in models:
        seconds = explain_model(model, sample, labels, ids, settings, store["class_names"], seed)
        timing = ", ".join(f"{method} {value:.1f} s" for method, value in seconds.items())
        click.echo(f"{model.name}: {timing} -> {paths.explanation_files(model.name)[0]}")
