"""scikit-learn model files in skops' format: saved atomically, loaded without running code.

A pickle (``joblib.load``) runs whatever code the file names, before any
check can see it; a model folder passed around ("apply my best model to
your photos") must not be able to do that. ``skops.io`` stores an
estimator's state as data and, on load, builds only types on its list of
trusted ones: scikit-learn's and NumPy's, plus those in
:data:`TRUSTED_TYPES`. A file naming any other type is refused before
anything in it is built.

Load one outside featpipe with::

    import skops.io
    from classifiers.model_files import TRUSTED_TYPES
    model = skops.io.load("data/models/vgg16-fc2-svm/model.skops", trusted=TRUSTED_TYPES)
"""

from plumbing.atomic import atomic_output
from plumbing.errors import FeatpipeError

SUFFIX = ".skops"
# Beyond skops' own trusted types, the ones featpipe's heads hold: a forest's trees (scikit-learn's
# Cython tree structure, which skops leaves to the caller to trust).
TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]


def save_skops(model, path):
    """Write the fitted scikit-learn ``model`` to ``path`` in skops' format, atomically."""
    import skops.io

    with atomic_output(path) as aside, open(aside, "wb") as file:
        skops.io.dump(model, file)


def save_pipeline(model, path):
    """Save the plain scikit-learn pipeline in ``model.pipeline_`` (the probes, the SVM), not featpipe's wrapper.

    Loading it needs scikit-learn only.
    """
    save_skops(model.pipeline_, path)


def load_skops(path):
    """The estimator in skops file ``path``; a file naming a type outside the trusted ones is refused, unbuilt.

    Raises
    ------
    FeatpipeError
        One line naming the untrusted types.
    """
    import skops.io

    untrusted = sorted(set(skops.io.get_untrusted_types(file=path)) - set(TRUSTED_TYPES))
    if untrusted:
        raise FeatpipeError(
            f"{path} holds types featpipe does not load: {', '.join(untrusted)} (a featpipe model file holds "
            f"scikit-learn and NumPy types only); nothing in it was run"
        )
    return skops.io.load(path, trusted=TRUSTED_TYPES)
