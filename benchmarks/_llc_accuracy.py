"""Accuracy of LLC estimators against closed forms: jaxbench vs devinterp (used by llc.py).

Cases (the sampler check of docs/experiments/lambda_validation.md): noise-free data
y = f*(x), x ~ N(0, I), n = 1000, centred at the truth w* = f* (a global minimum), so the
estimator must return lambda (Aoyagi & Watanabe 2005 / Aoyagi 2024), or lambda - (m-1)/log(nbeta)
when the multiplicity m > 1. No bias in the models; loss 0.5 |f - y|^2 per example.

Methods, each on the same seeds (a seed draws the truth and the data):
* jaxbench defaults: ``free_energy.llc`` with ``SamplerConfig("mala", 4 chains, 1000 draws,
  1000 burn-in)`` and nothing else set (gamma = 0.1, nbeta = n / log n, step from the curvature
  and adapted in burn-in, the gamma/10 plateau rerun and the w* checks included in the time);
* devinterp defaults: ``estimate_learning_coeff_with_summary`` with its defaults (SGLD, lr 0.01,
  localization 0, 10 chains x 100 draws, no burn-in, init_loss from its own first batch) and
  ``nbeta = default_nbeta(loader)`` as its docs ask, a shuffled DataLoader of batch 100;
* devinterp tuned: full batch, nbeta = n / log n, localization 0.1, 4 chains x (1000 burn-in +
  1000 draws), init_loss = L_n(w*), lr = s / (nbeta h + gamma) with s = 0.1, or 0.03 when the
  MALA acceptance of 0.1 (devinterp's callback) is below 0.9 on seed 0 (its own guidance for
  picking a step; not chosen by the error).
"""

from __future__ import annotations

import json
import math
import subprocess
import time

import numpy as np

CASES = [("rrr 3-3-3 r1", (3, 3, 3), 1), ("dln 3-4-4-3 r1", (3, 4, 4, 3), 1)]
N, SEEDS = 1000, 3

WORKER = r'''
import json, sys, time, warnings
import numpy as np, torch
from torch.utils.data import DataLoader, TensorDataset
from devinterp.optim.sgld import SGLD
from devinterp.slt.sampler import estimate_learning_coeff_with_summary
from devinterp.slt.mala import MalaAcceptanceRate
from devinterp.utils import default_nbeta
warnings.filterwarnings("ignore")
cfg = json.loads(sys.argv[1]); d = np.load(cfg["data"])
x, y = torch.tensor(d["x"]), torch.tensor(d["y"])
mats = [torch.tensor(d[f"w{i}"]) for i in range(cfg["layers"])]
layers = []
for w in mats:
    lin = torch.nn.Linear(w.shape[0], w.shape[1], bias=False); lin.weight.data = w.T.contiguous(); layers.append(lin)
model = torch.nn.Sequential(*layers)
def evaluate(model, batch):
    xb, yb = batch
    return 0.5 * ((model(xb) - yb) ** 2).sum(-1).mean(), {}
loader = DataLoader(TensorDataset(x, y), batch_size=cfg["batch_size"] or len(x), shuffle=True)
kw = dict(cfg["optimizer_kwargs"])
if kw.get("nbeta") == "default":
    kw["nbeta"] = default_nbeta(loader)
callbacks = []
if cfg["mala"]:
    callbacks = [MalaAcceptanceRate(num_chains=cfg["chains"], num_draws=cfg["draws"], learning_rate=kw["lr"], nbeta=kw["nbeta"])]
init_loss = None
if cfg["init_loss"]:
    with torch.no_grad():
        init_loss = evaluate(model, (x, y))[0].item()
torch.manual_seed(cfg["seed"])
t = time.perf_counter()
r = estimate_learning_coeff_with_summary(model, loader, evaluate=evaluate, sampling_method=SGLD, optimizer_kwargs=kw,
    num_chains=cfg["chains"], num_draws=cfg["draws"], num_burnin_steps=cfg["burnin"], init_loss=init_loss,
    seed=cfg["seed"], verbose=False, cores=1, callbacks=callbacks)
dt = time.perf_counter() - t
acc = float(callbacks[0].get_results()["mala_accept/mean"]) if cfg["mala"] else float("nan")
print(json.dumps({"seconds": dt, "llc": float(r["llc/mean"]), "accept": acc, "nbeta": float(kw["nbeta"])}))
'''


def make_case(dims, rank, seed):
    """Noise-free data of a rank-r deep linear truth (layout of experiments/lambda_validation)."""
    rng = np.random.default_rng(seed)
    mats = []
    for l, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        w = np.zeros((a, b))
        rows = a if l == 0 else rank
        cols = b if l == len(dims) - 2 else rank
        w[:rows, :cols] = rng.standard_normal((rows, cols))
        mats.append(w)
    x = rng.standard_normal((N, dims[0]))
    y = x
    for w in mats:
        y = y @ w
    return mats, x, y


def _jax_nll(n_layers):
    import jax.numpy as jnp

    def nll(p, b):
        out = b[0]
        for w in p:
            out = out @ w
        return 0.5 * jnp.sum((out - b[1]) ** 2, axis=-1)
    return nll


def jaxbench_runs(dims, rank):
    """(lambda_hat per seed, seconds per estimate excluding compilation, compile seconds)."""
    import jax
    import jax.numpy as jnp

    from jaxbench import free_energy as fe

    nll = _jax_nll(len(dims) - 1)
    cfg = fe.SamplerConfig("mala", num_chains=4, num_draws=1000, num_burnin=1000)
    f = jax.jit(lambda p, x, y, k: fe.llc(nll, p, (x, y), k, cfg))
    vals, secs, t_compile = [], [], None
    for seed in range(SEEDS):
        mats, x, y = make_case(dims, rank, seed)
        args = ([jnp.asarray(w, jnp.float32) for w in mats], jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32),
                jax.random.PRNGKey(seed))
        if t_compile is None:
            t = time.perf_counter()
            f = f.lower(*args).compile()
            t_compile = time.perf_counter() - t
        t = time.perf_counter()
        est = jax.block_until_ready(f(*args))
        secs.append(time.perf_counter() - t)
        vals.append(float(est.value))
    return np.array(vals), float(np.mean(secs)), t_compile


def devinterp_run(py, work, dims, rank, seed, **cfg):
    mats, x, y = make_case(dims, rank, seed)
    arrays = {"x": x.astype(np.float32), "y": y.astype(np.float32)}
    arrays.update({f"w{i}": w.astype(np.float32) for i, w in enumerate(mats)})
    path = work / "llc_accuracy_case.npz"
    np.savez(path, **arrays)
    full = {"data": str(path), "layers": len(mats), "seed": seed, **cfg}
    r = subprocess.run([str(py), "-c", WORKER, json.dumps(full)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def top_curvature(dims, rank, seed):
    import jax
    import jax.numpy as jnp

    from jaxbench import free_energy as fe
    mats, x, y = make_case(dims, rank, seed)
    p = [jnp.asarray(w, jnp.float32) for w in mats]
    return float(fe.hessian_extremes(_jax_nll(len(p)), p, (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)),
                                     jax.random.PRNGKey(0))[1])


def run(py, work):
    """Rows of the accuracy table (one per case x method) and a log of the step selection."""
    from jaxbench import free_energy as fe

    nbeta, gamma = N / math.log(N), 0.1
    rows, log = [], []
    for name, dims, rank in CASES:
        lam, m = fe.dln_learning_coefficient(dims, rank), fe.dln_multiplicity(dims, rank)
        target = lam - (m - 1) / math.log(nbeta)
        vals, sec, tc = jaxbench_runs(dims, rank)
        rows.append(dict(case=name, lam=lam, m=m, target=target, method="jaxbench defaults (MALA)", vals=vals,
                         seconds=sec, note=f"+ {tc:.0f} s compile once"))
        dflt = dict(batch_size=100, optimizer_kwargs={"nbeta": "default"}, chains=10, draws=100, burnin=0,
                    init_loss=False, mala=False)
        res = [devinterp_run(py, work, dims, rank, s, **dflt) for s in range(SEEDS)]
        rows.append(dict(case=name, lam=lam, m=m, target=target, method="devinterp defaults (SGLD)",
                         vals=np.array([r["llc"] for r in res]), seconds=float(np.mean([r["seconds"] for r in res])),
                         note=f"nbeta = default_nbeta = {res[0]['nbeta']:.1f}"))
        h = top_curvature(dims, rank, 0)
        chosen = None
        for scale in (0.1, 0.03):
            kw = dict(batch_size=0, optimizer_kwargs={"lr": scale / (nbeta * h + gamma), "localization": gamma,
                                                       "nbeta": nbeta}, chains=4, draws=1000, burnin=1000,
                      init_loss=True, mala=True)
            probe = devinterp_run(py, work, dims, rank, 0, **kw)
            log.append(f"{name}: devinterp step scale {scale}: MALA acceptance {probe['accept']:.3f}, "
                       f"lambda_hat {probe['llc']:.3f}")
            if probe["accept"] >= 0.9:
                chosen = (scale, kw, probe)
                break
        if chosen is None:
            chosen = (scale, kw, probe)
        scale, kw, first = chosen
        res = [first] + [devinterp_run(py, work, dims, rank, s, **kw) for s in range(1, SEEDS)]
        rows.append(dict(case=name, lam=lam, m=m, target=target, method=f"devinterp tuned (SGLD, step scale {scale})",
                         vals=np.array([r["llc"] for r in res]), seconds=float(np.mean([r["seconds"] for r in res])),
                         note=f"MALA acceptance {first['accept']:.2f}"))
    return rows, log


def table(rows) -> str:
    lines = [f"| case (lambda, m) | method | lambda_hat (mean ± s.e. over {SEEDS} seeds) | rel. error vs lambda | "
             "vs lambda - (m-1)/log(nbeta) | seconds per estimate | note |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        v = r["vals"]
        se = v.std(ddof=1) / np.sqrt(v.size)
        lines.append(f"| {r['case']} ({r['lam']:g}, {r['m']}) | {r['method']} | {v.mean():.2f} ± {se:.2f} | "
                     f"{v.mean() / r['lam'] - 1:+.1%} | {v.mean() / r['target'] - 1:+.1%} | {r['seconds']:.1f} | {r['note']} |")
    return "\n".join(lines)
