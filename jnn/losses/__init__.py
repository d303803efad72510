"""Per-example losses: every loss returns one value per example, shape ``(batch,)``.

Average them yourself (``loss(...).mean()``) or hand them to :func:`jnn.train.make_step`.
Losses are applied to raw scores (the output layer has no activation). Outputs keep the
floating dtype of the scores (float64 in, float64 out).

Families: classification (:func:`softmax_cross_entropy`, :func:`multiclass_hinge`,
:func:`sigmoid_binary_cross_entropy`), regression (:func:`l2_loss`), the hierarchical softmax
over a binary class tree (trees from :func:`balanced_class_tree`, :func:`huffman_class_tree`,
:func:`class_tree_from_codes`; the node-logit loss :func:`hierarchical_softmax` and the fast
head loss :func:`hierarchical_softmax_loss`), and what outputs predict (:func:`accuracy`,
:func:`top1_correct`, :func:`log_probabilities`), which accept both class scores and the
hierarchical head's :class:`HierarchicalOutput`.

Input checks. Dtype and shape checks always run (dtypes and shapes are static, so they also
work under ``jit``/``vmap``/``grad``). Value checks (labels within ``[0, C)``, targets within
``[0, 1]``) need concrete values: they run when the inputs are concrete arrays and are skipped
for tracers. Under ``jit``, an out-of-range integer label gives a **NaN** loss for that
example instead of an error (so a NaN monitor catches it; it never silently picks a class).
"""

from jnn.losses._classification import (
    multiclass_hinge,
    sigmoid_binary_cross_entropy,
    softmax_cross_entropy,
)
from jnn.losses._hierarchical import (
    HierarchicalOutput,
    HierarchicalPath,
    hierarchical_log_probs,
    hierarchical_path,
    hierarchical_path_correct,
    hierarchical_path_loss,
    hierarchical_predict,
    hierarchical_softmax,
    hierarchical_softmax_loss,
)
from jnn.losses._predictions import accuracy, log_probabilities, top1_correct
from jnn.losses._regression import l2_loss
from jnn.losses._trees import (
    ClassTree,
    balanced_class_tree,
    class_tree_from_codes,
    huffman_class_tree,
)

__all__ = [
    "ClassTree",
    "HierarchicalOutput",
    "HierarchicalPath",
    "accuracy",
    "balanced_class_tree",
    "class_tree_from_codes",
    "hierarchical_log_probs",
    "hierarchical_path",
    "hierarchical_path_correct",
    "hierarchical_path_loss",
    "hierarchical_predict",
    "hierarchical_softmax",
    "hierarchical_softmax_loss",
    "huffman_class_tree",
    "l2_loss",
    "log_probabilities",
    "multiclass_hinge",
    "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy",
    "top1_correct",
]
