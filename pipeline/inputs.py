"""What the stages that train or judge models read: the image store, pixels, and feature files checked against it.

``baseline``, ``train``, ``curves`` and ``explain`` all start here, so a
feature file made from another image store is refused the same way
everywhere.
"""

from plumbing.errors import FeatpipeError


def store_description(images):
    """The image store's class names, image shape and :func:`~classifiers.evaluation.data_record`, plus its path."""
    from classifiers.evaluation import data_record
    from storage.image_store import ImageStore

    with ImageStore(images) as store:
        return {"path": str(images), "class_names": store.class_names, "image_shape": store.image_shape(),
                **data_record(store.attrs)}


def load_pixels(images):
    """Both splits of the image store as pixel matrices in [0, 1], with what the store says of itself.

    Returns
    -------
    splits : dict of split name to ``(X, y)``; X ndarray of shape
        (n_samples, height * width * channels), float32; y ndarray of shape (n_samples,)
    class_names : list of str
    data : dict, :func:`~classifiers.evaluation.data_record` of the store
    """
    from classifiers.evaluation import data_record
    from classifiers.pixels import pixel_matrix
    from storage.image_store import SPLITS, ImageStore

    with ImageStore(images) as store:
        splits = {split: (pixel_matrix(store.images(split)), store.labels(split)) for split in SPLITS}
        return splits, store.class_names, data_record(store.attrs)


def check_matches_store(path, metadata, store):
    """Refuse a feature file made from another image store than ``store`` (a :func:`store_description`)."""
    if metadata.get("image_store_fingerprint") != store["image_store_fingerprint"]:
        raise FeatpipeError(
            f"{path} was extracted from another image store than {store['path']} "
            f"(fingerprint {str(metadata.get('image_store_fingerprint'))[:12]} vs "
            f"{store['image_store_fingerprint'][:12]}); rerun `featpipe extract`"
        )
    if list(metadata.get("class_names", [])) != store["class_names"]:
        raise FeatpipeError(
            f"{path} has class names {list(metadata.get('class_names', []))} but {store['path']} has "
            f"{store['class_names']}; rerun `featpipe extract`"
        )


def train_labels(path):
    """The training labels of a complete feature file (refusing missing or incomplete ones)."""
    import h5py

    from storage.feature_store import complete_metadata

    metadata = complete_metadata(path)
    with h5py.File(path, "r") as file:
        return metadata, file["train"]["labels"][:]


def checked_feature_file(path, store):
    """The metadata and training labels of feature file ``path``, after checking it matches ``store``."""
    metadata, labels = train_labels(path)
    check_matches_store(path, metadata, store)
    return metadata, labels
