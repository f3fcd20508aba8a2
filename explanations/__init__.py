"""Where does each model look? Occlusion, LIME, Grad-CAM, guided backpropagation and guided Grad-CAM.

Every model featpipe trains is a :class:`classifiers.ImageClassifier`
(stored uint8 images in, one score per class out), the same object
``featpipe predict`` uses: :func:`classifiers.load_model` opens one from its
folder. :func:`explain` runs the methods that apply and returns
:class:`Explanations`; :func:`write_explanations` and
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
>>> model = classifiers.load_model("data/models/vgg16-fc2-dense")
>>> found = explain(model, images, labels, occlusion={"patch": 8, "stride": 4})
>>> write_explanations("reports/explanations/vgg16-fc2-dense.h5", found, ids, class_names)
"""

from explanations.methods import METHODS, Explanations, applicable_methods, check_methods, explain, methods_for
from explanations.output import save_explanation_grid, scores_dataset_name, write_explanations

__all__ = [
    "METHODS",
    "Explanations",
    "applicable_methods",
    "check_methods",
    "explain",
    "methods_for",
    "save_explanation_grid",
    "scores_dataset_name",
    "write_explanations",
]
