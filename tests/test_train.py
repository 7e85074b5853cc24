import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbench import data, mlp, train


def _task(n=32, d=6, eta=0.0, key=0):
    tr = data.separated_sphere(jax.random.PRNGKey(key), n, d, eta, 0.2)
    te = data.separated_sphere(jax.random.PRNGKey(key + 100), 256, d, 0.0, 0.2)
    return train.Data(tr.x, tr.y, te.x, te.y_clean)


def test_log_grid():
    g = train.log_grid(1000, 12)
    assert g[0] == 0 and g[-1] == 1000 and np.all(np.diff(g) > 0)
    assert list(train.log_grid(3, 20)) == [0, 1, 2, 3]
    # two points are the start and the end, never [0, 1]
    assert list(train.log_grid(200, 2)) == [0, 200] and list(train.log_grid(200, 1)) == [0, 200]
    assert list(train.log_grid(1, 8)) == [0, 1]


def test_gd_matches_a_plain_python_optax_loop():
    # Independent second implementation: the loop most users write.
    spec = mlp.MLPSpec(6, (16, 16), 1)
    p0 = mlp.init(spec, jax.random.PRNGKey(1))
    d = _task()
    cfg = train.TrainConfig(steps=25, loss="logistic", optimizer="momentum", n_log=5)
    res = jax.jit(lambda p, lr: train.train(cfg, spec, p, d, lr, jax.random.PRNGKey(0), out_scale=0.7))(p0, 0.5)

    opt = optax.sgd(0.5, momentum=0.9)
    loss = lambda p: jnp.mean(jax.nn.softplus(-d.y * mlp.apply(spec, p, d.x, 0.7)[:, 0]))
    step = jax.jit(lambda p, s: (lambda g: (lambda u: (optax.apply_updates(p, u[0]), u[1]))(opt.update(g, s, p)))(jax.grad(loss)(p)))
    p, s = p0, opt.init(p0)
    for _ in range(25):
        p, s = step(p, s)
    for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(p)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(res.final["train_loss"], loss(p), rtol=1e-4)
    assert res.curves["train_loss"].shape == (len(res.grid),)


def test_wide_network_interpolates_clean_and_noisy_labels():
    spec = mlp.MLPSpec(6, (256, 256), 1)
    for eta in (0.0, 0.2):
        d = _task(eta=eta, key=3)
        cfg = train.TrainConfig(steps=400, loss="logistic", stop_at_interpolation=True)
        res = jax.jit(lambda p: train.train(cfg, spec, p, d, 2.0, jax.random.PRNGKey(0)))(mlp.init(spec, jax.random.PRNGKey(4)))
        assert float(res.final["train_err"]) == 0.0, eta
        assert 0 <= int(res.final["steps_to_fit"]) <= 400


def test_stop_at_interpolation_freezes_parameters():
    spec = mlp.MLPSpec(6, (64,), 1)
    d = _task(key=5)
    p0 = mlp.init(spec, jax.random.PRNGKey(0))
    short = train.TrainConfig(steps=300, stop_at_interpolation=True)
    long = train.TrainConfig(steps=600, stop_at_interpolation=True)
    a = train.train(short, spec, p0, d, 1.0, jax.random.PRNGKey(0))
    b = train.train(long, spec, p0, d, 1.0, jax.random.PRNGKey(0))
    assert int(a.final["steps_to_fit"]) >= 0
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(u, v, rtol=1e-6)


def test_sgd_square_loss_regression_decreases_loss():
    x, y, xt, yt, _ = data.linear_regression(jax.random.PRNGKey(0), 64, 4, 2, 0.05, n_test=64)
    spec = mlp.MLPSpec(4, (32,), 2)
    cfg = train.TrainConfig(steps=300, loss="square", optimizer="sgd", batch_size=16, n_log=6)
    res = jax.jit(lambda p: train.train(cfg, spec, p, train.Data(x, y, xt, yt), 0.05, jax.random.PRNGKey(1)))(mlp.init(spec, jax.random.PRNGKey(2)))
    assert float(res.curves["test_loss"][-1]) < 0.5 * float(res.curves["test_loss"][0])
    assert "steps_to_fit" not in res.final and not bool(res.final["diverged"])


def test_divergence_is_flagged():
    spec = mlp.MLPSpec(6, (16,), 1)
    cfg = train.TrainConfig(steps=50, loss="square")
    res = train.train(cfg, spec, mlp.init(spec, jax.random.PRNGKey(0)), _task(), 1e6, jax.random.PRNGKey(0))
    assert bool(res.final["diverged"])


def test_centred_training_matches_a_plain_loop():
    """f = alpha (h - h0) + s h0 trained with step lr / alpha^2: the same as a hand-written loop."""
    spec = mlp.MLPSpec(6, (16,), 1)
    p0 = mlp.init(spec, jax.random.PRNGKey(1))
    d = _task(eta=0.2, key=2)
    alpha, s0, lr = 8.0, 0.5, 2.0
    h0, h0t = mlp.apply(spec, p0, d.x), mlp.apply(spec, p0, d.x_test)
    cfg = train.TrainConfig(steps=30, loss="logistic", n_log=4)
    res = train.train(cfg, spec, p0, d, lr / alpha**2, jax.random.PRNGKey(0), out_scale=alpha, center=(h0, h0t),
                      init_noise=s0)
    f = lambda p, x, c: alpha * (mlp.apply(spec, p, x) - c) + s0 * c  # noqa: E731
    loss = lambda p: jnp.mean(jax.nn.softplus(-d.y * f(p, d.x, h0)[:, 0]))  # noqa: E731
    p = p0
    for _ in range(30):
        p = jax.tree.map(lambda a, g: a - lr / alpha**2 * g, p, jax.grad(loss)(p))
    for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(p)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(res.curves["train_loss"][0], jnp.mean(jax.nn.softplus(-d.y * s0 * h0[:, 0])), rtol=1e-6)
    err0 = jnp.mean(jnp.sign(s0 * h0t[:, 0]) != d.y_test)
    np.testing.assert_allclose(res.curves["test_err"][0], err0)


def test_minibatch_sgd_stops_at_the_first_epoch_with_zero_training_error():
    spec = mlp.MLPSpec(6, (128,), 1)
    d = _task(n=32, eta=0.1, key=6)
    p0 = mlp.init(spec, jax.random.PRNGKey(3))
    cfg = train.TrainConfig(steps=800, optimizer="sgd", batch_size=8, n_log=5, stop_at_interpolation=True)
    res = jax.jit(lambda p: train.train(cfg, spec, p, d, 2.0, jax.random.PRNGKey(1)))(p0)
    fit = int(res.final["steps_to_fit"])
    assert fit > 0 and fit % 4 == 0 and float(res.final["train_err"]) == 0  # epochs of 32 / 8 = 4 steps
    assert np.all(res.grid % 4 == 0)
    # one epoch fewer: the same steps, not yet interpolating
    short = train.TrainConfig(steps=fit - 4, optimizer="sgd", batch_size=8, n_log=2, stop_at_interpolation=True)
    r2 = jax.jit(lambda p: train.train(short, spec, p, d, 2.0, jax.random.PRNGKey(1)))(p0)
    assert float(r2.final["train_err"]) > 0 and int(r2.final["steps_to_fit"]) == -1
