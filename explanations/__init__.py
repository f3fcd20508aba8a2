"""Where does each model look? Occlusion, LIME, Grad-CAM, guided backpropagation and guided Grad-CAM.

Every model featpipe trains becomes an :class:`ExplainableModel` (stored
uint8 images in, one score per class out): the pixel forest
(:func:`pixel_forest_model`), a CNN feature extractor with ``rf``, ``svm``
or ``dense`` (:func:`feature_model`), a Keras CNN on the images
(:func:`keras_classifier_model`). :func:`explain` runs the methods that
apply and returns :class:`Explanations`; :func:`write_explanations` and
:func:`save_explanation_grid` write the ``.h5`` and ``.png``.

=================  =====================  ===============================
method             applies to             map
=================  =====================  ===============================
occlusion          every model            drop of the class's score, signed
lime               every model            superpixel weight, signed
grad_cam           Keras graphs (dense)   conv-block evidence, >= 0
guided_backprop    Keras graphs (dense)   input sensitivity, >= 0
guided_grad_cam    Keras graphs (dense)   guided_backprop x grad_cam, >= 0
=================  =====================  ===============================

Guided backpropagation alone fails the model-randomisation sanity check
(Adebayo et al. 2018; tests/test_explain.py shows it): its maps hardly
change when the head's weights are re-initialised. Guided Grad-CAM keeps
its detail only where Grad-CAM finds the class, and passes.

The gradient methods run on the TensorFlow and JAX backends. Keras is
imported only when a Keras model is built or explained.

Example
-------
>>> model = feature_model(extractor, dense_head, name="vgg16-fc2-dense")
>>> found = explain(model, images, labels, occlusion={"patch": 8, "stride": 4})
>>> write_explanations("reports/explanations/vgg16-fc2-dense.h5", found, ids, class_names)
"""

from explanations.methods import METHODS, Explanations, applicable_methods, check_methods, explain
from explanations.models import (
    ExplainableModel,
    KerasExplainableModel,
    SharedExtractor,
    feature_model,
    keras_classifier_model,
    pixel_forest_model,
)
from explanations.output import save_explanation_grid, scores_dataset_name, write_explanations

__all__ = [
    "METHODS",
    "ExplainableModel",
    "Explanations",
    "KerasExplainableModel",
    "SharedExtractor",
    "applicable_methods",
    "check_methods",
    "explain",
    "feature_model",
    "keras_classifier_model",
    "pixel_forest_model",
    "save_explanation_grid",
    "scores_dataset_name",
    "write_explanations",
]
