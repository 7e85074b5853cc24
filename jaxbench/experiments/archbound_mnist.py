"""Experiment 3 on MNIST: the architecture-independent bound where the paper tested it.

Source: A. Bapu, T. Chen, C.-K. Chien, P. Munoz Ewald, A. G. Moore, "Architecture independent
generalization bounds for overparametrized deep ReLU networks", arXiv 2504.05695 v4. Claim
(abstract): for n <= d training points, explicit zero-loss minimizers of deep ReLU networks have
a test error bounded by the metric geometry of test and training sets, the activation's
regularity and the norms of weights and biases, independently of depth and width; on MNIST the
bound agrees with the true test error "within a 22% margin on average". The bound below is our
reconstruction (docs/experiments/arch_bounds.md derives it); the paper's text was not read.

Setting: n <= n_max random MNIST training images (seed -> numpy ``default_rng(seed)``, drawn on
the host and passed in through `jax.pure_callback`: no image becomes a jit constant), pixels
/ 255 in R^784 as they are (no centring), one-hot targets in R^10; the first ``n_test`` of the
10,000 test images. n is traced (rows >= n masked): one compilation per architecture.

Per variant, for the construction ``f(x) = relu(x M + s) - s``, ``M = X^+ Y`` (`jaxbench.bounds`;
``s`` sized on the TRAINING radius, so f is the linear interpolant ``x M`` on that ball) and for
the same architecture trained by float32 gradient descent from random init (evaluated in
float64), with ``Lip = prod_l |W_l|_op`` and anchors ``a_i = y_i`` (construction: zero loss) or
``a_i = f(x_i)`` (GD), per test point ``(x~, y~)``:

* errors: ``|f(x~) - y~|``; the L2 cost ``(1/2N) sum |f(x~) - y~|^2``, its mean (MAE), the
  classification error (argmax);
* ``bound``: ``min_i [Lip |x~ - x_i| + |a_i - y~|]`` (nearest-point form) and its two parts at
  the minimizing i (Lipschitz part, label-gap part);
* ``chamfer_bound``: the same minimum over training points of the test point's label only,
  ``Lip |x~ - x_i| + |a_i - y_i|``: for the construction ``Lip`` times the class-matched Chamfer
  distance (test -> train) of the point; never below ``bound``;
* ``actual``: ``|f(x~) - f(x_i)| + |f(x_i) - y~|`` at the bound's minimizing i: the triangle
  inequality with the actual change of f in place of ``Lip |x~ - x_i|`` (what the worst-case
  Lipschitz factor costs at the same pairing; still >= the error);
* ``apriori``: ``Lip |x~| + beta + |y~|``, ``beta = sum_l |b_l| prod_{m>l} |W_m|_op``: the a priori
  bound in which the biases enter (`bounds.bias_term`); no training point used.
Each bound is also reported on the L2 scale, ``(1/2N) sum bound^2``, next to the L2 cost.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxbench import bounds, datasets, mlp
from jaxbench.experiments import archbound as ab
from jaxbench.experiments import one_of, positive, static, traced

NAME = "arch_bounds_mnist"
X64 = True
D, K, N_TEST_MAX = 784, 10, 10000

PARAMS = {
    "hidden_layers": static(int, 1, lambda v: v >= 0, "must be >= 0"),
    "width": positive(int, 64),
    "n_max": static(int, 560, lambda v: 1 <= v <= D, f"must lie in [1, {D}] (n <= d)"),
    "n_test": static(int, N_TEST_MAX, lambda v: 1 <= v <= N_TEST_MAX, f"must lie in [1, {N_TEST_MAX}]"),
    "n_lip": positive(int, 256),
    "gd_steps": static(int, 1000, lambda v: v >= 0, "must be >= 0 (0: no training)"),
    "n_log": positive(int, 10),
    "parametrization": one_of("ntk", "standard", default="ntk"),
    "n": traced(int, 100, lambda v: 1 <= v <= D, f"must lie in [1, {D}]: the construction needs n <= d"),
    "lr": traced(float, 1.0, lambda v: v > 0, "must be > 0"),
}


def check(v) -> None:
    """One-line ValueErrors: shapes that cannot work, and MNIST absent from this machine."""
    if v["hidden_layers"] > 0 and v["width"] < K:
        raise ValueError(f"width = {v['width']} < {K} classes: the construction needs width >= k")
    if v["n"] > v["n_max"]:
        raise ValueError(f"n = {v['n']} > n_max = {v['n_max']} (the rows drawn per seed)")
    if v["n_lip"] > v["n_test"]:
        raise ValueError(f"n_lip = {v['n_lip']} > n_test = {v['n_test']}")
    try:
        datasets.mnist_files("train")
        datasets.mnist_files("test")
    except datasets.MissingDataset as e:
        raise ValueError(str(e)) from None


# ----------------------------------------------------------------------------- data (host)
def train_subset(seed, n_max: int):
    """``(images uint8 (n_max, 784), labels uint8 (n_max,))``: n_max distinct training images
    drawn by ``numpy.random.default_rng(seed)`` (nested in n: the first n rows are the set)."""
    images, labels = datasets.mnist("train")
    idx = np.random.default_rng(int(seed)).choice(labels.shape[0], n_max, replace=False)
    return images.reshape(-1, D)[idx], labels[idx]


def test_set(n_test: int):
    """The first ``n_test`` test images and labels (all 10,000 by default)."""
    images, labels = datasets.mnist("test")
    return images.reshape(-1, D)[:n_test], labels[:n_test]


def _fetch(s, seed):
    """MNIST arrays from the host (`jax.pure_callback`: data, not constants of the program)."""
    u8 = jnp.uint8
    x, lab = jax.pure_callback(lambda sd: train_subset(sd, s.n_max),
                               (jax.ShapeDtypeStruct((s.n_max, D), u8), jax.ShapeDtypeStruct((s.n_max,), u8)),
                               seed, vmap_method="sequential")
    xt, labt = jax.pure_callback(lambda: test_set(s.n_test),
                                 (jax.ShapeDtypeStruct((s.n_test, D), u8), jax.ShapeDtypeStruct((s.n_test,), u8)))
    f64 = lambda a: a.astype(jnp.float64) / 255.0  # noqa: E731
    return f64(x), lab.astype(jnp.int32), f64(xt), labt.astype(jnp.int32)


# ----------------------------------------------------------------------------- numerics
def interpolate(x, y, mask):
    """``(M = X^+ Y (d, k), sigma_min, rank_ok)`` from ONE SVD of the kept rows of ``x (n_max, d)``.

    Masked-out rows are zeroed: they add zero singular values after the n kept ones. Tests check
    it against `bounds.interpolant`, `bounds.sigma_min` and `bounds.full_rank`.
    """
    xm, ym = jnp.where(mask[:, None], x, 0.0), jnp.where(mask[:, None], y, 0.0)
    u, s, vt = jnp.linalg.svd(xm, full_matrices=False)  # s descending, (n_max,)
    n = jnp.sum(mask)
    tol = s[0] * max(x.shape) * jnp.finfo(x.dtype).eps
    keep = (jnp.arange(s.shape[0]) < n) & (s > tol)
    inv = jnp.where(keep, 1.0 / jnp.where(keep, s, 1.0), 0.0)
    sig = jnp.take(s, n - 1)
    return vt.T @ (inv[:, None] * (u.T @ ym)), sig, sig > tol


def pair_dist(a, b):
    """Euclidean distances ``(p, q)`` between the rows of ``a (p, r)`` and ``b (q, r)`` (float64)."""
    sq = jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2.0 * a @ b.T
    return jnp.sqrt(jnp.maximum(sq, 0.0))


def stacked_norms(spec: mlp.MLPSpec, stacked):
    """``(op_norms (L+1,), bias_norms (L+1,))`` of stacked params (`archbound.init`), effective
    (parametrization folded in), input layer first; one batched SVD of zero-padded matrices."""
    first, mid, last = stacked
    layers = [jax.tree.map(lambda a: a[None], first)] + ([mid] if mid is not None else []) + \
             ([jax.tree.map(lambda a: a[None], last)] if last is not None else [])
    ws = [ab._effective(spec, lay["w"]) for lay in layers]
    rows, cols = max(w.shape[1] for w in ws), max(w.shape[2] for w in ws)
    padded = jnp.concatenate([jnp.pad(w, ((0, 0), (0, rows - w.shape[1]), (0, cols - w.shape[2]))) for w in ws])
    bscale = spec.b_std if spec.parametrization == "ntk" else 1.0
    bn = jnp.concatenate([bscale * jnp.linalg.norm(lay["b"], axis=-1) for lay in layers])
    return jax.vmap(bounds.op_norm)(padded), bn


def per_point(xt, yt, labt, ft, x, lab, mask, anchor, ftr, lip, beta, block: int = 1000):
    """Per-test-point errors and bounds of one network (module docstring), in blocks of test points.

    xt ``(N, d)``, yt ``(N, k)``, labt ``(N,)``, ft ``(N, k)``: test inputs, targets, labels and
    f there; x ``(n_max, d)``, lab ``(n_max,)``, mask ``(n_max,)``: training rows and which count;
    anchor ``(n_max, k)``: the values the bound starts from; ftr ``(n_max, k)``: f on them.
    ``lax.map`` over blocks of ``gcd(N, block)`` test points keeps the (block, n_max) distance
    matrices small. Returns a dict of ``(N,)`` arrays and ``back (n_max,)``: each training
    row's distance to its nearest test point.
    """
    bs = math.gcd(xt.shape[0], block)

    def one(args):
        xb, yb, lb, fb = args
        dist = jnp.where(mask[None], pair_dist(xb, x), jnp.inf)  # (bs, n_max)
        same = mask[None] & (lb[:, None] == lab[None])
        dy = pair_dist(yb, anchor)
        terms = lip * dist + dy
        istar = jnp.argmin(terms, axis=1)
        pick = lambda a, i: jnp.take_along_axis(a, i[:, None], 1)[:, 0]  # noqa: E731
        fi = ftr[istar]  # f at the bound's training point
        return {"err": jnp.linalg.norm(fb - yb, axis=-1), "bound": pick(terms, istar),
                "lip_part": lip * pick(dist, istar), "gap_part": pick(dy, istar),
                "chamfer_bound": jnp.min(jnp.where(same, terms, jnp.inf), axis=1),
                "actual": jnp.linalg.norm(fb - fi, axis=-1) + jnp.linalg.norm(fi - yb, axis=-1),
                "gap_nn": pick(dy, jnp.argmin(dist, axis=1)),
                "apriori": lip * jnp.linalg.norm(xb, axis=-1) + beta + jnp.linalg.norm(yb, axis=-1),
                "cls": jnp.argmax(fb, -1) != lb,
                "dist_nn": jnp.min(dist, axis=1), "chamfer": jnp.min(jnp.where(same, dist, jnp.inf), axis=1),
                "back": jnp.min(dist, axis=0)}

    split = lambda a: a.reshape(a.shape[0] // bs, bs, *a.shape[1:])  # noqa: E731
    out = jax.lax.map(one, (split(xt), split(yt), split(labt), split(ft)))
    back = jnp.min(out.pop("back"), axis=0)
    out = {k: v.reshape(-1) for k, v in out.items()}
    out["back"] = back
    return out


def scores(prefix, pp):
    """Means over test points of `per_point`'s arrays ``pp``, prefixed (``c_`` / ``g_``)."""
    cost = lambda v: 0.5 * jnp.mean(v**2)  # noqa: E731
    err, bnd, actual = pp["err"], pp["bound"], pp["actual"]
    out = {"test_cost": cost(err), "mae": jnp.mean(err), "cls_err": jnp.mean(pp["cls"]),
           "bound": jnp.mean(bnd), "bound_cost": cost(bnd),
           "bound_lip_part": jnp.mean(pp["lip_part"]), "bound_gap_part": jnp.mean(pp["gap_part"]),
           "chamfer_bound": jnp.mean(pp["chamfer_bound"]), "chamfer_bound_cost": cost(pp["chamfer_bound"]),
           "actual": jnp.mean(actual), "actual_cost": cost(actual), "apriori": jnp.mean(pp["apriori"]),
           "label_gap_nn": jnp.mean(pp["gap_nn"]),
           "violations": jnp.sum(err > bnd * (1 + 1e-9)) + jnp.sum(err > actual * (1 + 1e-9)),
           "ratio_min": jnp.min(bnd / err), "actual_ratio_min": jnp.min(actual / err)}
    out["tightness"] = out["bound"] / out["mae"]
    out["tightness_cost"] = out["bound_cost"] / out["test_cost"]
    return {f"{prefix}_{k}": v for k, v in out.items()}


# ----------------------------------------------------------------------------- one variant
def run_one(s, p, key):
    """One (architecture, n, seed): the construction and a GD-trained net on the same images."""
    x, lab, xt, labt = _fetch(s, p["seed"])
    y, yt = jax.nn.one_hot(lab, K, dtype=x.dtype), jax.nn.one_hot(labt, K, dtype=x.dtype)
    n = jnp.clip(p["n"], 1, s.n_max)
    mask = jnp.arange(s.n_max) < n
    widths = (s.width,) * s.hidden_layers
    xnorm = jnp.linalg.norm(jnp.where(mask[:, None], x, 0.0), axis=-1)

    # --- the explicit construction, sized on the training radius only
    m, smin, rank_ok = interpolate(x, y, mask)
    radius = jnp.max(xnorm)
    spec = bounds.construction_spec(D, widths, K)
    params = bounds.zero_loss_params(spec, x, y, radius, mask=mask, check=False, interp=m)
    ops, bns = bounds.layer_op_norms(spec, params), bounds.bias_norms(spec, params)
    c = lambda v: mlp.apply(spec, params, v)  # noqa: E731
    ct, ctr = c(xt), c(x)
    res = jnp.where(mask[:, None], ctr - y, 0.0)
    lip, beta = jnp.prod(ops), bounds.bias_term(ops, bns)
    pp = per_point(xt, yt, labt, ct, x, lab, mask, y, ctr, lip, beta)
    out = scores("c", pp)
    out.update({"c_lip": lip, "c_beta": beta,
        "c_train_cost": 0.5 * jnp.sum(res**2) / n,
        "c_lip_lower": bounds.lipschitz_lower(c, xt[: s.n_lip]),
        "m_op": bounds.op_norm(m), "sigma_min": smin, "y_op": bounds.op_norm(jnp.where(mask[:, None], y, 0.0)),
        "bias_norm": bns[0], "radius": radius,
        "frac_outside": jnp.mean(jnp.linalg.norm(xt, axis=-1) > radius),
        "c_clip": jnp.mean(jnp.linalg.norm(ct - xt @ m, axis=-1)),
        "dist_nn": jnp.mean(pp["dist_nn"]), "chamfer": jnp.mean(pp["chamfer"]),
        "chamfer_back": jnp.sum(jnp.where(mask, pp["back"], 0.0)) / n,
    })
    out = {kk: jnp.where(rank_ok, v, jnp.nan) if jnp.issubdtype(v.dtype, jnp.floating) else v
           for kk, v in out.items()}

    # --- the same architecture trained by float32 gradient descent from random init
    if s.gd_steps > 0:
        gspec = mlp.MLPSpec(D, widths, K, parametrization=s.parametrization)
        f32 = lambda t: jax.tree.map(lambda a: a.astype(jnp.float32), t)  # noqa: E731
        p0 = f32(ab.init(gspec, key))
        gs, curve = ab._gd(s, gspec, p0, f32(x), f32(y), mask, n, p["lr"].astype(jnp.float32))
        gs = jax.tree.map(lambda a: a.astype(jnp.float64), gs)  # the trained weights, evaluated in float64
        g = lambda v: ab._apply_scan(gspec, gs, v)  # noqa: E731
        gops, gbns = stacked_norms(gspec, gs)
        gt, gtr = g(xt), g(x)
        glip, gbeta = jnp.prod(gops), bounds.bias_term(gops, gbns)
        out.update(scores("g", per_point(xt, yt, labt, gt, x, lab, mask, gtr, gtr, glip, gbeta)))
        out.update({"g_lip": glip, "g_beta": gbeta})
        gres = jnp.where(mask[:, None], gtr - y, 0.0)
        out.update({
            "g_train_cost": 0.5 * jnp.sum(gres**2) / n,
            "g_train_cls": jnp.sum(mask & (jnp.argmax(gtr, -1) != lab)) / n,
            "g_lip_lower": bounds.lipschitz_lower(g, xt[: s.n_lip]),
            "g_weight_move": ab.relative_movement_stacked(gs, jax.tree.map(lambda a: a.astype(jnp.float64), p0)),
            "g_dist_to_c": jnp.mean(jnp.linalg.norm(gt - ct, axis=-1)),
            "g_curve_train_loss": curve,
        })
        out["diverged"] = ~jnp.isfinite(out["g_train_cost"])
    else:
        out["diverged"] = jnp.zeros((), bool)
    out.update({"n_used": n, "rank_ok": rank_ok})
    return out


def variant_bytes(s) -> int:
    """Per-variant memory: about ten (1000, n_max) float64 blocks plus the data."""
    return 8 * (10 * 1000 * s.n_max + 4 * (s.n_test + s.n_max) * D)


def plot(results_dir):
    from jaxbench.experiments import archbound_mnist_plot  # matplotlib only when plotting

    return archbound_mnist_plot.plot(results_dir)


def claims(results_dir):
    from jaxbench.experiments import archbound_mnist_plot

    return archbound_mnist_plot.claims(results_dir)
