"""What the ``finetune`` params mean to the library: the settings of a fine-tuned backbone, checked.

Read by the ``finetune`` stage and by ``curves`` (each fine-tuned backbone on
the learning curves), so that both train the same network.
"""

from pipeline.stage import params_key


def finetune_settings(settings):
    """``finetune`` params as :func:`classifiers.cnn.finetune.fit_finetune` takes them."""
    options = {key: value for key, value in settings.items() if key != "backbones"}
    side = options.pop("input_size")
    return {**options, "input_size": None if side is None else (side, side)}


def check_finetune_settings(backbone, settings):
    """``finetune.unfreeze`` and ``finetune.augment`` for ``backbone``, or a one-line error naming the key."""
    from classifiers.cnn.finetune import finetune_backbone
    from classifiers.cnn.training import check_augment

    with params_key("finetune.unfreeze"):
        finetune_backbone(backbone, settings["unfreeze"])
    with params_key("finetune.augment"):
        check_augment(settings["augment"])
