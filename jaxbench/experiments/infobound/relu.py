"""Extension of `infobound.layers` to ReLU networks trained by gradient descent (sample-based measures).

Setting (ours): the same Gaussian data as the linear model. A depth-L ReLU MLP (`jaxbench.mlp`,
NTK parametrization, biases) with Gaussian noise injection after every hidden activation,
``T_l = relu(T_{l-1} W_l + b_l) + s xi_l``, ALL layers trained by full-batch gradient descent on
the logistic loss (fresh injection noise at every step). ``reps`` independent training sets
are trained as one vmapped batch.

Per training set and per layer l (0 = input, 1..L-1 hidden, L = output margin y f):

* W1 between the n training representations (re-drawn injection noise) and the representations
  of n fresh test points drawn with the SAME labels, by exact optimal transport
  (`jaxbench.info.assignment`) with cost ``|t - t'| + penalty * [y != y']``: the penalty exceeds
  the cost of any within-class matching, so the plan never mixes classes and the value is W1
  on (representation, label) with an infinite label mismatch cost - the metric under which a
  loss that is Lipschitz in the representation for each label gives the bound.
* the same distance between two independent label-matched test sets (``w1_null``): the plug-in
  bias of the empirical estimate (the exact law-level W1 of two equal laws is 0).
* a Gaussian-approximation KL: per class, Gaussians fitted to train and test representations
  (`jaxbench.info.gaussian_fit_kl`), averaged with the class frequencies; ``kl_null`` likewise.
* the Lipschitz factor of the remaining network: ``prod_{k>l} |W_k|_op`` (ReLU and additive
  noise are 1-Lipschitz; the logistic loss is 1-Lipschitz in the margin), and its product with
  W1 (``w1_bound``) and with the debiased ``W1 - w1_null`` (``w1_bound_debiased``). This product is a PLUG-IN ESTIMATE, not a certified bound: the bound needs W1 between
  the conditional laws given the weights, which one training set samples only n times.

The expected generalization gap is the mean over training sets of test loss (on ``n_test`` fresh
points) minus training loss, both with injection noise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxbench import data, info, mlp

# covariance shrinkage of the Gaussian fits (fraction of the mean variance): with ~n/2 points
# per class in up to `width` dimensions the sample covariances are near singular
RIDGE = 0.1


def spec_of(s) -> mlp.MLPSpec:
    return mlp.MLPSpec(s.d, (s.width,) * (s.depth - 1), 1, activation="relu", parametrization="ntk")


def _affine(spec: mlp.MLPSpec, params):
    """Effective ``(W (n_l, n_{l+1}), b (n_{l+1},))`` per layer (parametrization folded in)."""
    ws = mlp.weight_matrices(spec, params)
    scale = spec.b_std if spec.parametrization == "ntk" else 1.0
    return [(w, p["b"] * scale) for w, p in zip(ws, params)]


def forward(spec, params, x, noise, key):
    """Noisy forward pass. Returns ``(reps, f)``: reps = [x, T_1, ..., T_{L-1}], f ``(n,)``."""
    layers = _affine(spec, params)
    reps = [x]
    t = x
    for l, (w, b) in enumerate(layers[:-1]):
        t = jax.nn.relu(t @ w + b) + noise * jax.random.normal(jax.random.fold_in(key, l), (x.shape[0], w.shape[1]))
        reps.append(t)
    w, b = layers[-1]
    return reps, (t @ w + b)[:, 0]


def _logistic(margin):
    return jnp.mean(jax.nn.softplus(-margin))


def train(spec, params, x, y, lr, noise, steps: int, key):
    """Full-batch GD on the logistic loss with fresh injection noise each step (lax.scan)."""

    def loss(q, t):
        return _logistic(y * forward(spec, q, x, noise, jax.random.fold_in(key, t))[1])

    def step(q, t):
        g = jax.grad(loss)(q, t)
        return jax.tree.map(lambda a, b: a - lr * b, q, g), None

    params, _ = jax.lax.scan(step, params, jnp.arange(steps))
    return params


def labelled_cost(a, b, y):
    """Cost matrix ``(n, n)`` of W1 between ``{(a_i, y_i)}`` and ``{(b_i, y_i)}`` (same labels y):
    Euclidean distance plus a penalty above any within-class matching's total cost when labels
    differ, so the optimal plan never mixes classes. Returns ``(cost, dist)``."""
    dist = info.pairwise_distances(a, b)
    penalty = (y[:, None] != y[None, :]) * (a.shape[0] * jnp.max(dist) + 1.0)
    return dist + penalty, dist


def exact_w1_batch(costs, dists):
    """Exact W1 for a stack of cost matrices ``(k, n, n)``: ONE vmapped assignment (one
    compiled loop for all layers, rather than one per layer). Returns ``(k,)``."""
    cols = jax.vmap(lambda c: info.assignment(c)[0])(costs)
    return jnp.mean(jnp.take_along_axis(dists, cols[:, :, None], axis=2)[..., 0], axis=1)


def class_kls(pairs, y, ridge=RIDGE):
    """Gaussian-fit KL of (representation, label) for a list of sample pairs ``(a, b)``:
    ``sum_c p_c KL(fit(a | c) || fit(b | c))`` with ridge-regularised covariances (see
    `jaxbench.info.gaussian_fit_kl`). Pairs of equal dimension are stacked and go through ONE
    batched `jaxbench.info.kl_gaussians_loop` call (compile time). Returns ``(len(pairs),)``."""
    pos = y > 0
    p = jnp.mean(pos)
    out = [None] * len(pairs)
    for dim in sorted({a.shape[-1] for a, _ in pairs}):
        idx = [i for i, (a, _) in enumerate(pairs) if a.shape[-1] == dim]
        fits = []
        for i in idx:
            a, b = pairs[i]
            for w in (pos, ~pos):
                ma, ca = info.weighted_moments(a, w)
                mb, cb = info.weighted_moments(b, w)
                eps = ridge * jnp.maximum(0.5 * (jnp.trace(ca) + jnp.trace(cb)) / dim, 1e-12)
                eye = jnp.eye(dim, dtype=a.dtype)
                fits.append((ma, ca + eps * eye, mb, cb + eps * eye))
        kl = info.kl_gaussians_loop(*(jnp.stack(f) for f in zip(*fits))).reshape(len(idx), 2)
        for j, i in enumerate(idx):
            out[i] = p * kl[j, 0] + (1.0 - p) * kl[j, 1]
    return jnp.stack(out)


def _fit_kl_1d(a, b):
    """KL between 1-d Gaussians fitted to samples ``a (n,)``, ``b (n,)``."""
    return info.kl_gaussians_1d(jnp.mean(a), jnp.std(a, ddof=1), jnp.mean(b), jnp.std(b, ddof=1))


def _one_training_set(s, p, key):
    spec = spec_of(s)
    k_x, k_t1, k_t2, k_big, k_init, k_train, k_eval = jax.random.split(key, 7)
    mu = jnp.zeros(s.d).at[0].set(p["mu"])
    x, y = data.gaussian_binary(k_x, s.n, mu, p["sigma"])
    # label-matched test sets: fresh inputs given the training labels
    xt1 = y[:, None] * mu + p["sigma"] * jax.random.normal(k_t1, x.shape)
    xt2 = y[:, None] * mu + p["sigma"] * jax.random.normal(k_t2, x.shape)
    xb, yb = data.gaussian_binary(k_big, s.n_test, mu, p["sigma"])
    params = train(spec, mlp.init(spec, k_init), x, y, p["lr"], p["noise"], s.steps, k_train)

    ke = jax.random.split(k_eval, 4)
    reps_tr, f_tr = forward(spec, params, x, p["noise"], ke[0])
    reps_1, f_1 = forward(spec, params, xt1, p["noise"], ke[1])
    reps_2, f_2 = forward(spec, params, xt2, p["noise"], ke[2])
    _, f_big = forward(spec, params, xb, p["noise"], ke[3])

    pairs = [labelled_cost(a, b, y) for a, b in zip(reps_tr + reps_2, reps_1 + reps_1)]
    both_kl = class_kls(list(zip(reps_tr + reps_2, reps_1 + reps_1)), y)
    kl, kl_null = list(both_kl[: len(reps_tr)]), list(both_kl[len(reps_tr):])
    # output layer: 1-d margins (the loss depends on (f, y) only through y f)
    v_tr, v_1, v_2 = y * f_tr, y * f_1, y * f_2
    kl.append(_fit_kl_1d(v_tr, v_1))
    kl_null.append(_fit_kl_1d(v_2, v_1))

    norms = jnp.stack([jnp.linalg.norm(w, 2) for w, _ in _affine(spec, params)])  # (L,)
    # Lipschitz factor of layers l+1..L for representation l = 0..L-1, and 1 for the output
    lip = jnp.concatenate([jnp.cumprod(norms[::-1])[::-1], jnp.ones(1)])
    train_loss = _logistic(v_tr)
    test_loss = _logistic(yb * f_big)
    return {
        "costs": jnp.stack([c for c, _ in pairs]), "dists": jnp.stack([d for _, d in pairs]),
        "w1_out": info.w1_samples_1d(v_tr, v_1), "w1_out_null": info.w1_samples_1d(v_2, v_1),
        "kl": jnp.stack(kl),
        "kl_null": jnp.stack(kl_null), "lip": lip, "train_loss": train_loss, "test_loss": test_loss,
        "test_err": jnp.mean(yb * f_big <= 0),
    }


def run(s, p, key):
    """All ``s.reps`` training sets of one variant. Returns per-layer arrays ``(L+1,)`` and scalars."""
    out = jax.vmap(lambda k: _one_training_set(s, p, k))(jax.random.split(key, s.reps))
    r, n, L = s.reps, s.n, s.depth
    # all 2 L cost matrices of all training sets go through ONE batched assignment loop
    costs, dists = out.pop("costs"), out.pop("dists")
    w1_all = exact_w1_batch(costs.reshape(-1, n, n), dists.reshape(-1, n, n)).reshape(r, 2, L)
    out["w1"] = jnp.concatenate([w1_all[:, 0], out.pop("w1_out")[:, None]], 1)
    out["w1_null"] = jnp.concatenate([w1_all[:, 1], out.pop("w1_out_null")[:, None]], 1)
    mean = lambda v: jnp.mean(v, 0)
    sem = lambda v: jnp.std(v, 0, ddof=1) / jnp.sqrt(r)
    gap = out["test_loss"] - out["train_loss"]
    w1_bound = out["lip"] * out["w1"]
    return {
        "gap": mean(gap), "gap_se": sem(gap), "train_loss": mean(out["train_loss"]),
        "test_loss": mean(out["test_loss"]), "test_err": mean(out["test_err"]),
        "kl_term": mean(out["kl"]), "kl_null": mean(out["kl_null"]), "w1_term": mean(out["w1"]),
        "w1_null": mean(out["w1_null"]), "lip": mean(out["lip"]), "w1_bound": mean(w1_bound),
        "w1_bound_se": sem(w1_bound),
        # Lip x (W1 - its test-vs-test baseline): the plug-in product with the estimator's bias removed
        "w1_bound_debiased": mean(out["lip"] * (out["w1"] - out["w1_null"])),
        "w1_excess": mean(out["w1"] - out["w1_null"]), "w1_excess_se": sem(out["w1"] - out["w1_null"]),
    }
