"""Where a backbone's weights come from, and their SHA-256.

Three choices, never swapped for one another behind the user's back:

- ``"imagenet"``: the file Keras keeps in its cache, ``~/.keras/models/``
  (``$KERAS_HOME/models/`` when set), downloaded if it can be. Offline and
  not cached, extraction stops and says which file to put where.
- ``"none"``: random initialisation from the seed. For tests and smoke
  runs; the features mean nothing, and every output says so.
- a path to a weights file: Keras' ``.weights.h5`` or the applications'
  legacy ``.h5`` (e.g. a copy of the ImageNet file), loaded into the full
  model (with its top).

The SHA-256 identifies the numbers: of the weights file for ``imagenet``
and a path, and of the initial weight values themselves for ``none`` (so two
seeds make two identities).
"""

import contextlib
import dataclasses
import hashlib
import re
import warnings
from pathlib import Path

from plumbing.backend import keras_home, seeded_initialisation
from plumbing.errors import FeatpipeError, first_line
from plumbing.hashing import file_sha256

# Said wherever random weights show (extract, finetune, the explanations' files and grids): one text.
RANDOM_WEIGHTS_WARNING = (
    "WARNING: random weights (--weights none): the backbone was never trained; "
    "its features (and maps of them) are not ImageNet features"
)


@dataclasses.dataclass(frozen=True)
class WeightsChoice:
    """A resolved ``weights`` request.

    ``label`` is what the feature file's ``weights`` attribute says;
    ``keras_argument`` is what the Keras application builder takes
    (``"imagenet"``, ``None`` or a path).
    """

    label: str
    keras_argument: object
    path: Path = None

    @property
    def is_random(self):
        return self.label == "none"


def resolve_weights(weights):
    """Check a ``weights`` request before any model is built.

    Parameters
    ----------
    weights : str or path-like or None
        ``"imagenet"``, ``"none"`` (``None`` means the same) or a path.
    """
    if weights is None or str(weights) == "none":
        return WeightsChoice("none", None)
    if str(weights) == "imagenet":
        return WeightsChoice("imagenet", "imagenet")
    path = Path(weights)
    if not path.is_file():
        raise FeatpipeError(
            f"weights file not found: {path}; expected 'imagenet', 'none' or the path of a .h5 / .weights.h5 file"
        )
    if not path.name.endswith(".h5"):
        raise FeatpipeError(f"weights file {path}: expected a Keras .weights.h5 or .h5 file, got {path.suffix or 'no suffix'!r}")
    return WeightsChoice(str(weights), str(path), path)


def keras_cache_dir():
    """Where Keras keeps downloaded application weights: ``<keras home>/models``."""
    return keras_home() / "models"


def values_sha256(model):
    """SHA-256 of a model's weight values, in order: the identity of random weights."""
    digest = hashlib.sha256()
    for array in model.get_weights():
        digest.update(str(array.shape).encode())
        digest.update(array.astype(array.dtype.newbyteorder("<")).tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def strict_weight_loading():
    """Turn Keras' warnings about unmatched parts of a weights file into errors.

    Keras may warn, then keep random values, for parts of a file it can't
    match: a silent fallback, which featpipe never allows.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=UserWarning, module=r"keras\.src\.(saving|legacy)")
        yield


def build_with_weights(backbone, keras, choice, seed=0):
    """Build ``backbone``'s full Keras application with the weights ``choice`` names.

    Random weights are drawn from ``seed`` alone (:func:`plumbing.backend.seeded_initialisation`).
    Offline ImageNet weights end in a :class:`FeatpipeError` that names the file
    Keras wanted; a weights file that doesn't fit the model ends in one too.

    Returns
    -------
    model : keras.Model
    sha256 : str
    """
    if choice.is_random:
        with seeded_initialisation(keras, seed):
            model = backbone.build(keras, None)
        return model, values_sha256(model)
    try:
        with strict_weight_loading():
            model = backbone.build(keras, choice.keras_argument)
    except Exception as error:  # Keras reports a failed download or a bad file as bare Exception / ValueError
        raise _weights_error(backbone, choice, error) from None
    if choice.label == "imagenet":
        return model, file_sha256(keras_cache_dir() / backbone.imagenet_file)
    return model, file_sha256(choice.path)


def _weights_error(backbone, choice, error):
    message = str(error)
    if choice.label == "imagenet" and "URL fetch failure" in message:
        url = re.search(r"URL fetch failure on (\S+): ", message)
        wanted = url.group(1).rsplit("/", 1)[-1] if url else backbone.imagenet_file
        origin = f" from {url.group(1)}" if url else ""
        return FeatpipeError(
            f"ImageNet weights for {backbone.name} are not cached and could not be downloaded (offline?): "
            f"put {wanted}{origin} into {keras_cache_dir()}/, or pass --weights PATH to a copy of it"
        )
    return FeatpipeError(f"cannot load {choice.label} weights into {backbone.name}: {first_line(error)}")
