"""What the stages that learn from the stored images share: the images, and writing an image model's files.

``scratch`` and ``finetune`` train Keras models that take the uint8 images
as stored; their records and files are those of every other model
(:mod:`classifiers.records`), with ``input: images``.
"""

from pipeline import paths


def load_images(images):
    """``(train, test, class_names, data record)``, each split ``(images, labels)`` as stored."""
    from classifiers.evaluation import data_record
    from storage.image_store import ImageStore

    with ImageStore(images) as store:
        splits = {split: (store.images(split), store.labels(split)) for split in ("train", "test")}
        return splits["train"], splits["test"], store.class_names, data_record(store.attrs)


def write_image_model(
    name, classifier, model, metrics, predicted, test_labels, class_names, settings, seed, data, image_shape, **source
):  # fmt: skip
    """The record and files of an image model (scratch or fine-tuned): what ``train`` writes for the others.

    ``image_shape`` is the stored images' (height, width, channels), the model's input.
    """
    from classifiers.cnn.training import save_model
    from classifiers.records import ModelRecord, write_model_outputs

    record = ModelRecord(model=name, classifier=classifier, input="images", **metrics, features="images",
                         params=dict(settings), seed=seed, data=data, **source)
    return write_model_outputs(
        record, paths.model_files(name, ".keras"), y_true=test_labels, y_pred=predicted, class_names=class_names,
        model=model, save=save_model, output_labels=range(len(class_names)), image_shape=image_shape,
    )
