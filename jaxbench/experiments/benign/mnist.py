"""Benign overfitting's data assumption measured on MNIST: are differently-labelled points separated?

Zhu et al. (ICML 2023, arXiv 2305.19377) assume well-separated data and check the assumption on
MNIST. The paper's exact statistic could not be read; ours (a reconstruction) are, on a random
subset of n images (pixels as vectors in R^784, scaled to the unit sphere, the setting of the
theory, or raw in [0, 1]) and the ten digit labels:

* ``sep_min``: the separation delta = the smallest distance between two differently-labelled
  images (the assumption needs delta > 0; a duplicated image with two labels gives 0, counted
  in ``conflicting_pairs``: distance <= 1e-6 x the median), and ``sep_min_rel`` = delta / the
  median pairwise distance;
* per image, the distance to its nearest differently-labelled image (``nn_diff``) and to its
  nearest same-label image (``nn_same``); their medians and 1% quantiles, and the 1-NN margin
  ``(nn_diff - nn_same) / 2`` (positive: the nearest neighbour has the same label), its median,
  1% quantile and the fraction of positive margins;
* mean within-label and between-label pairwise distances; the 10 x 10 matrix of the smallest
  distance between digits a and b (arrays), and the per-image ``nn_diff`` / ``nn_same`` (arrays).

Distances in float64 (X64): ``|x - z|^2 = |x|^2 + |z|^2 - 2 <x, z>`` loses ~1e-16 relative.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxbench import datasets
from jaxbench.experiments import one_of, positive

NAME = "benign_mnist"
X64 = True

PARAMS = {
    "n": positive(int, default=2000),
    "split": one_of("train", "test", default="train"),
    "normalize": one_of("sphere", "pixels", default="sphere"),
}


def check(v) -> None:
    """The data must be on this machine: one line naming both ways to provide it otherwise."""
    try:
        datasets.mnist_files(v["split"])
    except datasets.MissingDataset as e:
        raise ValueError(str(e)) from None
    size = sum(datasets.MNIST_COUNTS[v["split"]])
    if v["n"] < 20 or v["n"] > size:
        raise ValueError(f"n = {v['n']}: must lie in [20, {size}] (the {v['split']} split's size)")


def distances(x):
    """Pairwise Euclidean distances ``(n, n)`` of the rows of ``x (n, p)``."""
    sq = jnp.sum(x * x, axis=1)
    return jnp.sqrt(jnp.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0))


def separation(dist, labels, classes: int = 10) -> dict:
    """Separation statistics of labelled points from their distance matrix ``(n, n)``, labels ``(n,)``."""
    n = labels.shape[0]
    same = labels[:, None] == labels[None, :]
    self_ = jnp.eye(n, dtype=bool)
    big = jnp.inf
    nn_diff = jnp.min(jnp.where(same, big, dist), axis=1)
    nn_same = jnp.min(jnp.where(same & ~self_, dist, big), axis=1)
    margin = (nn_diff - nn_same) / 2
    off = ~self_
    median = jnp.median(jnp.where(off, dist, jnp.nan)[jnp.triu_indices(n, 1)])
    within = jnp.sum(jnp.where(same & off, dist, 0.0)) / jnp.sum(same & off)
    between = jnp.sum(jnp.where(same, 0.0, dist)) / jnp.sum(~same)
    onehot = jax.nn.one_hot(labels, classes, dtype=bool)  # (n, c)
    masked = jnp.where(off, dist, big)
    per_a = jax.vmap(lambda m: jnp.min(jnp.where(m[:, None], masked, big), axis=0))(onehot.T)  # (c, n)
    class_min = jax.vmap(lambda m: jnp.min(jnp.where(m[None, :], per_a, big), axis=1))(onehot.T)  # (c, c)
    q = lambda v, p: jnp.quantile(v, p)  # noqa: E731
    delta = jnp.min(nn_diff)
    return {
        "sep_min": delta, "sep_min_rel": delta / median, "same_min": jnp.min(nn_same),
        "conflicting_pairs": jnp.sum(~same & (dist <= 1e-6 * median)) // 2, "median_dist": median,
        "nn_diff_med": jnp.median(nn_diff), "nn_diff_q01": q(nn_diff, 0.01),
        "nn_same_med": jnp.median(nn_same), "nn_same_q01": q(nn_same, 0.01),
        "nn_ratio_med": jnp.median(nn_diff / nn_same),
        "margin_med": jnp.median(margin), "margin_q01": q(margin, 0.01), "margin_pos": jnp.mean(margin > 0),
        "mean_within": within, "mean_between": between,
        "class_min": class_min, "nn_diff": nn_diff, "nn_same": nn_same,
    }


def run_one(s, p, key):
    """One random subset of ``s.n`` images of ``s.split`` (the seed picks it)."""
    images, labels = datasets.mnist(s.split)  # constants of the program (read once per process)
    idx = jax.random.choice(key, labels.shape[0], (s.n,), replace=False)
    x = jnp.asarray(images.reshape(labels.shape[0], -1))[idx].astype(jnp.float64) / 255.0
    if s.normalize == "sphere":
        x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    out = separation(distances(x), jnp.asarray(labels)[idx].astype(jnp.int32))
    out["label_counts"] = jnp.bincount(jnp.asarray(labels)[idx], length=10)
    return out


def plot(results_dir):
    from jaxbench.experiments.benign import plots_mnist
    return plots_mnist.plot(results_dir)


def claims(results_dir):
    from jaxbench.experiments.benign import claims as claimlib
    return claimlib.mnist(results_dir)


