"""Maps to read with care, and why: the caveat a method's settings carry, and reading it back.

Grad-CAM weights each channel of a convolutional layer by its gradient
averaged over positions. Where the class score reads that layer through a
Flatten layer (the scratch CNN's dense layers, VGG16's fully connected
layers), every position has weights of its own: what a channel contributes
at one place can differ from another, and the average keeps only the mean.
Selvaraju et al. (2017) apply Grad-CAM to exactly such a network (VGG16's
fc layers), and its maps are informative when the channels carry the class;
evidence that lies in *where* a feature sits does not show (on planted data
where only position decides, tests/test_explain.py found such maps at chance).
So these maps are drawn and stored, and marked: :func:`grad_cam_caveat`
says why in the method's settings (the ``.h5`` attribute ``caveat`` of
``maps/grad_cam`` and ``maps/guided_grad_cam``), the grid marks the column,
and the report names the models (:func:`read_caveats`).
"""

CAVEAT_ATTRIBUTE = "caveat"
MARKED_METHODS = ("grad_cam", "guided_grad_cam")


def grad_cam_caveat(conv_layer, flatten_layer):
    """The caveat of Grad-CAM maps read at ``conv_layer`` when the class score sees it through ``flatten_layer``."""
    return (
        f"the class score reads {conv_layer} through the Flatten layer {flatten_layer}, which gives every position "
        f"weights of its own; Grad-CAM averages the gradients over positions, so evidence that lies in where a "
        f"feature sits does not show (Selvaraju et al. apply it to VGG16's Flatten and fc layers too): "
        f"compare with occlusion and LIME"
    )


def read_caveats(path):
    """``{method: caveat}`` of an explanations file (``reports/explanations/<model>.h5``); empty when none is marked."""
    import h5py

    with h5py.File(path, "r") as file:
        maps = file.get("maps", {})
        return {
            method: str(maps[method].attrs[CAVEAT_ATTRIBUTE])
            for method in maps
            if CAVEAT_ATTRIBUTE in maps[method].attrs
        }
