"""Built-in data sets (no download), your own arrays, minibatches and input checks.

``load_digits()`` (scikit-learn's bundled 8x8 digits) and ``load_mnist1d()`` (MNIST-1D
regenerated procedurally, cached after the first run) return a :class:`Dataset` of float32
features and int32 labels with train / validation / test splits. The validation part is
carved out of the training split with a seeded, stratified shuffle; standardisation
(``jnn.preprocessing``) is fitted on the training part only and applied to all three.
``load_npz(path)`` reads your own arrays with the same checks (``validate``,
``check_dataset``) that ``jnn.train.fit`` and the command line apply; ``load_npy_dir(folder)``
opens a folder of ``.npy`` files memory-mapped (checked slice by slice, streamed by ``fit``).

Minibatches: each epoch is a fresh permutation drawn from a key, cut into
``N // batch_size`` full batches. The last ``N % batch_size`` examples of the permutation
are **dropped** for that epoch; because the permutation changes every epoch, every example
is seen in expectation, and every step has the same shape (one compiled step).
"""

from jnn.data._batches import batch_indices, bootstrap_sample, iterate_batches
from jnn.data._builtin import load, load_diabetes, load_digits, load_mnist1d
from jnn.data._dataset import Dataset, to_images
from jnn.data._npy_dir import load_npy_dir
from jnn.data._npz import load_npz
from jnn.data._synthetic import make_many_classes, zipf_frequencies
from jnn.data._targets import (
    DIGIT_ATTRIBUTES,
    QuantileBins,
    check_attributes,
    digit_attributes,
    fit_quantile_bins,
    from_bins,
    to_bins,
)
from jnn.data._validate import check_dataset, infer_num_classes, validate, validate_chunkwise

__all__ = [
    "DIGIT_ATTRIBUTES",
    "Dataset",
    "QuantileBins",
    "batch_indices",
    "bootstrap_sample",
    "check_attributes",
    "check_dataset",
    "digit_attributes",
    "fit_quantile_bins",
    "from_bins",
    "infer_num_classes",
    "iterate_batches",
    "load",
    "load_diabetes",
    "load_digits",
    "load_mnist1d",
    "load_npy_dir",
    "load_npz",
    "make_many_classes",
    "to_bins",
    "to_images",
    "validate",
    "validate_chunkwise",
    "zipf_frequencies",
]
