"""What the ``scratch`` params mean to the library: the settings of the CNN from scratch.

Read by the ``scratch`` stage and by ``curves`` (the CNN on the learning
curves), so that both train the same network.
"""

from pipeline.stage import params_key


def scratch_settings(params):
    """The ``scratch`` params as :func:`classifiers.cnn.scratch.fit_scratch_cnn` takes them; the augmentation checked.

    null (or left out) is the library's architecture; the record says what was built.
    """
    from classifiers.cnn.scratch import ARCHITECTURE
    from classifiers.cnn.training import check_augment

    settings = {key: ARCHITECTURE[key] if value is None and key in ARCHITECTURE else value
                for key, value in params["scratch"].items()}
    with params_key("scratch.augment"):
        check_augment(settings["augment"])
    return settings
