"""Local learning coefficient: jaxbench vs devinterp 1.3.2 (PyTorch CPU), side by side in one run.

Both estimate ``lambda_hat = nbeta (mean_t L_B(w_t) - L_n(w*))`` with SGLD in the Lau et al. (2023)
form ``w <- w - (eps/2)(nbeta grad L_B + gamma (w - w*)) + N(0, eps)`` on the SAME data, model,
w*, step size eps, localization gamma, nbeta = n / log n, minibatch size, chains and draws
(no burn-in, as in the reference probe). devinterp gets L_n(w*) as ``init_loss`` (full batch,
as jaxbench uses), draws minibatches from a shuffled DataLoader and runs chains one after the
other (cores=1); jaxbench draws minibatches the same way (a fresh permutation per epoch,
``SamplerConfig(shuffle=True)``) and vmaps the chains (and, in the last case, 64 variants x 8
chains) in one jitted call. Compile time is reported apart.

    python benchmarks/llc.py              # speed and accuracy; creates benchmarks/.venv-devinterp
    python benchmarks/llc.py --accuracy   # the accuracy table alone (benchmarks/_llc_accuracy.py)

Cases: a 10-parameter linear regression (n = 1000), a ReLU MLP 10 -> 100 -> 90 -> 1 (10,281
parameters, n = 1000), and 64 variants (datasets) x 8 chains of the linear model in one call.
The estimate agrees when |difference| < 2 sqrt(se_jax^2 + se_devinterp^2), se = std over
chains / sqrt(chains).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import venv
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-devinterp"
WORK = HERE / "_work"
PEERS = ["torch==2.13.0", "devinterp==1.3.2"]

WORKER = r'''
import json, sys, time, warnings
import numpy as np, torch
from torch.utils.data import DataLoader, TensorDataset
from devinterp.optim.sgld import SGLD
from devinterp.slt.sampler import estimate_learning_coeff_with_summary
warnings.filterwarnings("ignore")
cfg = json.loads(sys.argv[1]); d = np.load(cfg["data"])
x, y = torch.tensor(d["x"]), torch.tensor(d["y"])
dims = cfg["dims"]
layers = []
for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
    lin = torch.nn.Linear(a, b)
    lin.weight.data = torch.tensor(d[f"w{i}"]).T.contiguous(); lin.bias.data = torch.tensor(d[f"b{i}"])
    layers += [lin, torch.nn.ReLU()]
model = torch.nn.Sequential(*layers[:-1])
def evaluate(model, batch):
    xb, yb = batch
    return 0.5 * ((model(xb) - yb) ** 2).sum(-1).mean(), {}
loader = DataLoader(TensorDataset(x, y), batch_size=cfg["batch_size"], shuffle=True)
with torch.no_grad():
    init_loss = evaluate(model, (x, y))[0].item()
torch.manual_seed(0)
t = time.perf_counter()
r = estimate_learning_coeff_with_summary(
    model, loader, evaluate=evaluate, sampling_method=SGLD,
    optimizer_kwargs=dict(lr=cfg["eps"], localization=cfg["gamma"], nbeta=cfg["nbeta"]),
    num_chains=cfg["chains"], num_draws=cfg["draws"], num_burnin_steps=0, init_loss=init_loss,
    seed=0, verbose=False, cores=1)
dt = time.perf_counter() - t
per_chain = [r[f"llc-chain/{i}"] for i in range(cfg["chains"])]
print(json.dumps({"seconds": dt, "per_chain": per_chain, "init_loss": init_loss,
                  "torch": torch.__version__, "threads": torch.get_num_threads()}))
'''


def ensure_venv() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {VENV} ({' '.join(PEERS)}) ...", flush=True)
        venv.create(VENV, with_pip=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PEERS], check=True)
    return py


def make_case(name, dims, n, seed):
    """Data x ~ N(0, I), y = teacher(x) + N(0, 1); w* = least squares (linear) or Adam (MLP)."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxbench import mlp
    spec = mlp.MLPSpec(dims[0], tuple(dims[1:-1]), dims[-1], parametrization="standard")
    kt, kx, ke, ki = jax.random.split(jax.random.PRNGKey(seed), 4)
    x = jax.random.normal(kx, (n, dims[0]))
    y = mlp.apply(spec, mlp.init(spec, kt), x) + jax.random.normal(ke, (n, dims[-1]))
    if len(dims) == 2:
        xa = jnp.concatenate([x, jnp.ones((n, 1))], 1)
        sol = jnp.linalg.lstsq(xa, y)[0]
        params = [{"w": sol[:-1], "b": sol[-1]}]
    else:
        opt = optax.adam(optax.cosine_decay_schedule(3e-3, 1500))
        loss = lambda p: 0.5 * jnp.mean(jnp.sum((mlp.apply(spec, p, x) - y) ** 2, -1))

        def step(c, _):
            p, s = c
            u, s = opt.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, u), s), None

        p0 = mlp.init(spec, ki)
        params = jax.lax.scan(step, (p0, opt.init(p0)), None, length=1500)[0][0]
    return spec, x, y, params


def jax_llc(spec, x, y, params, eps, gamma, nbeta, chains, draws, batch, variants=None):
    """Returns (per-chain lambda_hat, compile s, run s). variants: stacked (x, y, params) for a vmapped sweep."""
    import jax
    import jax.numpy as jnp

    from jaxbench import free_energy as fe
    from jaxbench import mlp

    def nll(p, b):
        return 0.5 * jnp.sum((mlp.apply(spec, p, b[0]) - b[1]) ** 2, -1)

    cfg = fe.SamplerConfig("sgld", chains, draws, num_burnin=0, batch_size=batch, shuffle=True)
    # the speed comparison runs the same SGLD as devinterp: no gamma/10 plateau rerun, no w* checks
    one = lambda xx, yy, pp, k: fe.llc(nll, pp, (xx, yy), k, cfg, eps, nbeta=nbeta, localization=gamma,
                                       plateau=False, check_wstar=False).per_chain
    if variants is None:
        fn, args = jax.jit(one), (x, y, params, jax.random.PRNGKey(1))
    else:
        fn = jax.jit(jax.vmap(one))
        args = (*variants, jax.random.split(jax.random.PRNGKey(1), variants[0].shape[0]))
    t = time.perf_counter()
    compiled = fn.lower(*args).compile()
    t_compile = time.perf_counter() - t
    t = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return np.asarray(out), t_compile, time.perf_counter() - t


def seeds_llc(spec, x, y, params, eps, gamma, nbeta, chains, draws, batch, seeds=range(1, 9)):
    """Per-chain lambda_hat of the same case for several PRNG seeds (independent runs)."""
    import jax
    import jax.numpy as jnp

    from jaxbench import free_energy as fe
    from jaxbench import mlp

    nll = lambda p, b: 0.5 * jnp.sum((mlp.apply(spec, p, b[0]) - b[1]) ** 2, -1)
    cfg = fe.SamplerConfig("sgld", chains, draws, num_burnin=0, batch_size=batch, shuffle=True)
    f = jax.jit(lambda k: fe.llc(nll, params, (x, y), k, cfg, eps, nbeta=nbeta, localization=gamma,
                                 plateau=False, check_wstar=False).per_chain)
    return [np.asarray(f(jax.random.PRNGKey(s))) for s in seeds]


def devinterp_llc(py, spec, x, y, params, eps, gamma, nbeta, chains, draws, batch):
    WORK.mkdir(exist_ok=True)
    arrays = {"x": np.asarray(x, np.float32), "y": np.asarray(y, np.float32)}
    for i, layer in enumerate(params):
        arrays[f"w{i}"] = np.asarray(layer["w"], np.float32)
        arrays[f"b{i}"] = np.asarray(layer["b"], np.float32)
    np.savez(WORK / "llc_case.npz", **arrays)
    cfg = {"data": str(WORK / "llc_case.npz"), "dims": list(spec.dims), "eps": float(eps), "gamma": gamma,
           "nbeta": float(nbeta), "chains": chains, "draws": draws, "batch_size": batch}
    r = subprocess.run([str(py), "-c", WORKER, json.dumps(cfg)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def _se(v):
    v = np.asarray(v, float)
    return v.std(ddof=1) / np.sqrt(v.size)


def main():
    import jax

    from jaxbench import free_energy as fe
    from jaxbench import mlp

    py = ensure_venv()
    n, chains, batch, gamma = 1000, 8, 100, 1.0
    nbeta = n / np.log(n)
    rows = []
    for name, dims, draws in [("linear 9 -> 1 (10 params)", (9, 1), 1200),
                              ("ReLU MLP 10-100-90-1 (10,281 params)", (10, 100, 90, 1), 300)]:
        spec, x, y, params = make_case(name, dims, n, seed=0)
        h = float(fe.curvature(lambda p, b: 0.5 * ((mlp.apply(spec, p, b[0]) - b[1]) ** 2).sum(-1),
                               params, (x, y), jax.random.PRNGKey(2)))
        eps = 0.05 / (nbeta * h + gamma)
        per_j, tc, tj = jax_llc(spec, x, y, params, eps, gamma, nbeta, chains, draws, batch)
        dv = devinterp_llc(py, spec, x, y, params, eps, gamma, nbeta, chains, draws, batch)
        rows.append(dict(case=name, eps=eps, draws=draws, jax=per_j, jax_compile=tc, jax_s=tj, dv=dv))
        print(f"{name}: eps={eps:.3g} jaxbench {per_j.mean():.3f}±{_se(per_j):.3f} ({tj:.2f}s + {tc:.1f}s compile) "
              f"devinterp {np.mean(dv['per_chain']):.3f}±{_se(dv['per_chain']):.3f} ({dv['seconds']:.1f}s)", flush=True)
    # the linear case again with 8 independent jaxbench seeds (one compile), pooled over 64 chains
    pooled = seeds_llc(*make_case("", (9, 1), n, seed=0), rows[0]["eps"], gamma, nbeta, chains, rows[0]["draws"], batch)
    print("linear, jaxbench seeds 1..8:", " ".join(f"{v.mean():.2f}" for v in pooled),
          f"pooled {np.concatenate(pooled).mean():.3f}±{_se(np.concatenate(pooled)):.3f}", flush=True)
    # 64 variants (datasets) x 8 chains of the linear model in one jitted call
    import jax.numpy as jnp
    cases = [make_case("", (9, 1), n, seed=s) for s in range(64)]
    spec = cases[0][0]
    stack = lambda i: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[c[i] for c in cases])
    lin = rows[0]
    per_v, tc, tv = jax_llc(spec, None, None, None, lin["eps"], gamma, nbeta, chains, lin["draws"], batch,
                            variants=(stack(1), stack(2), stack(3)))
    print(f"64 variants x 8 chains: {tv:.2f}s + {tc:.1f}s compile, mean lambda_hat {per_v.mean():.3f}", flush=True)
    report(rows, dict(jax_s=tv, jax_compile=tc, per=per_v, draws=lin["draws"]), chains)
    # accuracy against closed forms (benchmarks/_llc_accuracy.py)
    import _llc_accuracy
    WORK.mkdir(exist_ok=True)
    acc_rows, log = _llc_accuracy.run(py, WORK)
    text = _llc_accuracy.table(acc_rows)
    print("\n".join(log) + "\n" + text, flush=True)
    (WORK / "llc_accuracy.md").write_text("\n".join(log) + "\n\n" + text + "\n")


def report(rows, sweep, chains):
    import jax
    dv_rate_lin = chains * rows[0]["draws"] / rows[0]["dv"]["seconds"]
    lines = ["| case | chains x draws | jaxbench lambda_hat | devinterp lambda_hat | |diff| / s.e. | "
             "jaxbench chain-steps/s | devinterp chain-steps/s | ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cs = chains * r["draws"]
        dj, dd = r["jax"], np.asarray(r["dv"]["per_chain"])
        z = abs(dj.mean() - dd.mean()) / np.hypot(_se(dj), _se(dd))
        rj, rd = cs / r["jax_s"], cs / r["dv"]["seconds"]
        lines.append(f"| {r['case']} | {chains} x {r['draws']} | {dj.mean():.2f} ± {_se(dj):.2f} | "
                     f"{dd.mean():.2f} ± {_se(dd):.2f} | {z:.2f} | {rj:,.0f} | {rd:,.0f} | {rj / rd:,.0f}x |")
    cs = sweep["per"].size * sweep["draws"]
    rj = cs / sweep["jax_s"]
    lines.append(f"| 64 variants x 8 chains, linear (one call) | 512 x {sweep['draws']} | "
                 f"{sweep['per'].mean():.2f} (mean of 64) | – | – | {rj:,.0f} | {dv_rate_lin:,.0f} (linear, above) | "
                 f"{rj / dv_rate_lin:,.0f}x |")
    text = "\n".join(lines)
    meta = (f"\njax {jax.__version__} on {jax.devices()[0].platform}; torch {rows[0]['dv']['torch']} "
            f"({rows[0]['dv']['threads']} threads), devinterp 1.3.2; compile times "
            + ", ".join(f"{r['jax_compile']:.1f}s" for r in rows) + f", {sweep['jax_compile']:.1f}s (64 variants), "
            "excluded from the rates.")
    print(text + meta)
    (HERE / "_work").mkdir(exist_ok=True)
    (HERE / "_work" / "llc_table.md").write_text(text + meta + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))
    if sys.argv[1:] == ["--accuracy"]:   # the accuracy table alone
        import _llc_accuracy
        WORK.mkdir(exist_ok=True)
        acc_rows, log = _llc_accuracy.run(ensure_venv(), WORK)
        print("\n".join(log) + "\n" + _llc_accuracy.table(acc_rows))
        (WORK / "llc_accuracy.md").write_text("\n".join(log) + "\n\n" + _llc_accuracy.table(acc_rows) + "\n")
    else:
        main()
