"""Synthetic data with many classes: Gaussian clusters with Zipf-distributed class frequencies.

The data set behind the hierarchical softmax's tests, benchmarks and ``jnn train --dataset
many-classes``: the number of classes is a parameter (up to 100,000 and beyond), class
frequencies follow Zipf's law like word frequencies, so a Huffman tree has a short expected
path, and it is generated in a fraction of a second with no download.
"""

from __future__ import annotations

import math

import numpy as np

from jnn.data._dataset import Dataset

__all__ = ["make_many_classes", "zipf_frequencies"]


def _check_int(fn, name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an int, got {value!r}.")
    if value < low:
        raise ValueError(f"{fn}: {name} must be >= {low}, got {value}.")
    return int(value)


def _check_real(fn, name, value, low, strict=False, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: {name} must be a real number, got {value!r}.")
    value = float(value)
    too_low = value <= low if strict else value < low
    if not math.isfinite(value) or too_low or (high is not None and value >= high):
        bound = f"> {low}" if strict else f">= {low}"
        bound += f" and < {high}" if high is not None else ""
        raise ValueError(f"{fn}: {name} must be finite and {bound}, got {value!r}.")
    return value


def zipf_frequencies(num_classes: int, zipf: float = 1.0) -> np.ndarray:
    """Zipf's law over classes: ``p_c = (c + 1)^-s / sum_k (k + 1)^-s``.

    Class 0 is the most frequent; ``s = 0`` is uniform, ``s = 1`` the classic word-frequency
    law (``p_0 ~ 1 / ln C``).

    Args:
      num_classes: ``C >= 2``.
      zipf: the exponent ``s >= 0``.

    Returns:
      ``(C,)`` float64 probabilities summing to 1.
    """
    num_classes = _check_int("zipf_frequencies", "num_classes", num_classes, 2)
    zipf = _check_real("zipf_frequencies", "zipf", zipf, 0.0)
    weights = np.arange(1, num_classes + 1, dtype=np.float64) ** -zipf
    return weights / weights.sum()


def _hierarchical_centres(num_classes, dim, rng):
    """``mu_c = sum_{l=0}^{L} g_{l, c >> l} / sqrt(L + 1)``, ``g ~ N(0, I)``, ``L = ceil(log2 C)``:
    classes whose indices share the prefix ``c >> l`` share level ``l``'s offset."""
    levels = max(1, math.ceil(math.log2(num_classes))) + 1
    ids = np.arange(num_classes)
    centres = np.zeros((num_classes, dim), np.float32)
    for level in range(levels):
        offsets = rng.standard_normal(((num_classes - 1 >> level) + 1, dim), dtype=np.float32)
        centres += offsets[ids >> level]
    return centres / np.float32(math.sqrt(levels))


def _split(x, y, val_fraction, test_fraction, rng):
    """Random (unstratified: most classes are rare) train / validation / test index split."""
    n = x.shape[0]
    n_test = max(1, round(test_fraction * n))
    n_val = max(1, round(val_fraction * (n - n_test)))
    if n - n_test - n_val < 1:
        raise ValueError(
            f"make_many_classes: num_examples={n} is too small for a train, validation and "
            "test split; use at least 3."
        )
    perm = rng.permutation(n)
    test, val, train = np.split(perm, [n_test, n_test + n_val])
    return (x[train], y[train]), (x[val], y[val]), (x[test], y[test])


def make_many_classes(
    num_classes: int,
    dim: int = 64,
    num_examples: int = 4096,
    zipf: float = 1.0,
    seed: int = 0,
    *,
    noise: float = 0.1,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    standardize: bool = True,
):
    """Hierarchically clustered inputs with Zipf-distributed class frequencies, split three ways.

    Clusters of clusters: class ``c``'s centre is ``mu_c = sum_{l=0}^{L} g_{l, c >> l} /
    sqrt(L + 1)`` with ``L = ceil(log2 C)`` and independent ``g ~ N(0, I_dim)``, so classes
    whose indices share a binary prefix (``c >> l``) share the offsets of those levels and
    adjacent indices are similar classes: the subtrees of :func:`jnn.losses.balanced_class_tree`
    are clusters. An example of class ``y`` is ``x = mu_y + noise * eps``, ``eps ~ N(0,
    I_dim)`` (centres have unit variance per feature, each level ``1 / (L + 1)`` of it), and
    labels are drawn with the probabilities of :func:`zipf_frequencies` (class 0 the most
    frequent), so a few classes hold most examples and many appear rarely or never. The split
    is a seeded random one (not stratified: most classes have fewer than two examples);
    features are standardised with training statistics when ``standardize``. Frequencies for
    a Huffman tree: the true ``zipf_frequencies(C, zipf)`` or the training counts
    ``np.bincount(ds.y_train, minlength=C)`` (a Huffman tree groups classes by frequency, not
    by these clusters).

    Args:
      num_classes: ``C >= 2``.
      dim: the input dimension ``>= 1``.
      num_examples: examples in all three splits together (``>= 3``).
      zipf: the Zipf exponent ``s >= 0`` (0: uniform classes).
      seed: the seed of the centres, labels, noise and split.
      noise: the noise standard deviation ``> 0`` (the centres have unit variance).
      val_fraction: fraction of the non-test examples used for validation.
      test_fraction: fraction of all examples used for test.
      standardize: apply ``jnn.preprocessing.standardize`` fitted on the training part.

    Returns:
      A ``jnn.data.Dataset`` named ``"many-classes"`` (float32 ``(N, dim)`` features, int32
      labels, ``input_shape=(dim,)``, ``image_shape=(dim, 1)``).
    """
    # Long only by its docstring (the generating process); the body is its steps.
    num_classes = _check_int("make_many_classes", "num_classes", num_classes, 2)
    dim = _check_int("make_many_classes", "dim", dim, 1)
    num_examples = _check_int("make_many_classes", "num_examples", num_examples, 3)
    seed = _check_int("make_many_classes", "seed", seed, 0)
    noise = _check_real("make_many_classes", "noise", noise, 0.0, strict=True)
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        _check_real("make_many_classes", name, value, 0.0, strict=True, high=1.0)
    rng = np.random.default_rng(seed)
    y = rng.choice(num_classes, size=num_examples, p=zipf_frequencies(num_classes, zipf))
    centres = _hierarchical_centres(num_classes, dim, rng)
    x = centres[y] + np.float32(noise) * rng.standard_normal((num_examples, dim), np.float32)
    train, val, test = _split(x, y.astype(np.int32), val_fraction, test_fraction, rng)
    if standardize:
        from jnn import preprocessing

        stats = preprocessing.fit_standardize(train[0])
        train, val, test = (
            (np.asarray(preprocessing.standardize(stats, a)), b) for a, b in (train, val, test)
        )
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)
    i32 = lambda a: np.ascontiguousarray(a, dtype=np.int32)
    return Dataset(
        *(f(a) for pair in (train, val, test) for f, a in zip((f32, i32), pair, strict=True)),
        num_classes=num_classes,
        input_shape=(dim,),
        image_shape=(dim, 1),
        name="many-classes",
    )
