"""Figures and claim checks of `info_linear` (read only from the results directory)."""

from __future__ import annotations

import numpy as np

from jaxbench import plot as plotlib
from jaxbench import store


def _sel(t, **eq):
    m = ~np.asarray(t["diverged"], bool)
    for k, v in eq.items():
        m &= np.asarray(t[k]) == v
    return m


def _f(t, k, m):
    return np.asarray(t[k], float)[m]


def _layers(ax, K):
    ax.set_xticks(range(K + 1), [str(l) for l in range(K + 1)])
    ax.set_xlabel("layer l  (0 = input, K = last hidden)")


def _at_last(t, a, key, m):
    """Per-layer array ``key`` at each selected row's last hidden layer K = depth - 1."""
    K = np.asarray(t["depth"])[m] - 1
    return np.asarray(a[key], float)[m][np.arange(K.size), K]


def _mean_layers(a, key, m):
    v = np.asarray(a[key], float)[m]
    return v.mean(0), (v.std(0, ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.zeros(v.shape[1]))


def _rank_fig(res, out):
    t, a = res.table, res.arrays
    m = _sel(t, arch="rank", mech="none")
    fig, axes = plotlib.figure(1, 3, width=3.2, height=2.8)
    ax = axes[0, 0]
    ranks = np.unique(_f(t, "rank_eff", m))
    n = int(np.unique(np.asarray(t["n"])[m])[0]) if m.any() else 2
    rr = np.linspace(0.8, ranks.max() + 0.2, 50) if ranks.size else np.array([1.0])
    ax.plot(rr, 0.5 * rr * np.log(n / (n - 1)), "k-", lw=1, label="closed form (r/2) log(n/(n-1))")
    ax.errorbar(_f(t, "rank_eff", m), _f(t, "kl0_mc", m), 2 * _f(t, "kl0_mc_se", m), fmt="o", ms=3,
                color="C0", label="Monte Carlo  E_w KL(P_{Z|w} || P_Z) +- 2 s.e.")
    ax.set_xlabel("rank r of B_K")
    ax.set_ylabel("KL term I(w; U_l) [nats], every l")
    ax.legend(fontsize=6)
    ax = axes[0, 1]
    for i, r in enumerate(ranks):
        mr = m & (np.asarray(t["rank_eff"]) == r)
        g, gs = _f(t, "gap01", mr), _f(t, "gap01_se", mr)
        ax.errorbar(np.full(g.size, r) + np.linspace(-0.12, 0.12, g.size), g, 2 * gs, fmt="s", ms=3, color="C3",
                    label="MC 0-1 gap +- 2 s.e." if i == 0 else None)
    ax.plot(rr, np.sqrt(0.25 * rr * np.log(n / (n - 1))), "C0-", label="KL bound sqrt((r/4) log(n/(n-1)))")
    ax.set_xticks(ranks, [f"{r:g}" for r in ranks])
    ax.set_xlabel("rank r")
    ax.set_ylabel("0-1 loss: bound / gap")
    ax.legend(fontsize=6)
    ax = axes[0, 2]
    for c, b in enumerate(np.unique(np.asarray(t["beta"])[m])):
        mb = m & (np.asarray(t["beta"]) == b)
        F2 = _f(t, "frob2", mb)
        o = np.argsort(F2)
        ax.plot(F2[o], _f(t, "w1_bound_cf", mb)[o], "_", ms=10, mew=1.5, color=f"C{c}", label=f"beta = {b:g}")
        ax.plot(F2[o], _at_last(t, a, "w1_bound", mb)[o], "o", ms=3, color=f"C{c}")
        ax.plot(F2[o], _f(t, "gap_lin", mb)[o], "x", ms=4, color=f"C{c}")
    for mk, lab in (("_", "closed form (Cauchy-Schwarz)"), ("o", "MC W1 bound (W2 upper end)"), ("x", "MC linear-loss gap")):
        ax.plot([], [], mk, color="0.3", label=lab)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("|B_K|_F^2 = r beta^(2K)")
    ax.set_ylabel("linear loss: W1 bound / gap")
    ax.legend(fontsize=5.5, ncols=2)
    return plotlib.save(fig, out, "rank", res.meta)


def _sdpi_fig(res, out):
    t, a = res.table, res.arrays
    mechs = [x for x in ("gauss", "dropout", "dropconnect") if _sel(t, mech=x).any()]
    fig, axes = plotlib.figure(1, max(len(mechs), 1), width=3.3, height=3.0, sharey=True)
    axes = np.atleast_1d(axes).ravel()
    names = {"gauss": "Gaussian noise s", "dropout": "Dropout p", "dropconnect": "DropConnect p"}
    for ax, mech in zip(axes, mechs):
        m0 = _sel(t, mech=mech)
        K = int(np.asarray(t["depth"])[m0][0]) - 1
        x = np.arange(K + 1)
        ax.plot(x, _mean_layers(a, "klb_uncontracted", m0)[0][: K + 1], "k:", lw=1.5, label="uncontracted (DPI only)")
        for c, q in enumerate(np.unique(np.asarray(t["strength"])[m0])):
            m = m0 & (np.asarray(t["strength"]) == q)
            col = f"C{c}"
            ax.plot(x, _mean_layers(a, "klb_contracted", m)[0][: K + 1], "-o", ms=3, color=col,
                    label=f"{names[mech]} = {q:g}: SDPI-contracted")
            key = "klb_exact" if mech == "gauss" else "klb_mask"
            ax.plot(x + 0.06, _mean_layers(a, key, m)[0][: K + 1], "--^", ms=3, color=col, lw=1,
                    label="exact I(w; U_l)" if mech == "gauss" else "mask-revealed MI (MC)")
            g = _f(t, "gap01", m)
            ax.errorbar(K + 0.25 + 0.08 * c, g.mean(), 2 * np.sqrt(np.mean(_f(t, "gap01_se", m) ** 2) / g.size),
                        fmt="*", ms=7, color=col, label="MC 0-1 gap" if c == 0 else None)
        ax.set_yscale("log")
        _layers(ax, K)
        ax.set_title(f"{names[mech].split()[0]}: KL bound sqrt(D_l / 2)")
        con = np.asarray(a["klb_contracted"], float)[m0][:, : K + 1]
        if np.nanmax(1 - con / np.asarray(a["klb_uncontracted"], float)[m0][:, : K + 1]) < 0.02:
            ax.text(0.5, 0.55, "every contracted curve lies on the\nuncontracted one (eta >= 0.98)",
                    transform=ax.transAxes, fontsize=6.5, ha="center")
        ax.legend(fontsize=5, ncols=1)
    axes[0].set_ylabel("bound on the 0-1 gap (stars: MC gap +- 2 s.e.)")
    return plotlib.save(fig, out, "sdpi", res.meta)


def _funnel_fig(res, out):
    t, a = res.table, res.arrays
    fig, axes = plotlib.figure(1, 2, width=3.4, height=2.8)
    ax = axes[0, 0]
    m0 = _sel(t, arch="aniso")
    for c, rho in enumerate(np.unique(np.asarray(t["rho"])[m0])):
        m = m0 & (np.asarray(t["rho"]) == rho)
        K = int(np.asarray(t["depth"])[m][0]) - 1
        v = np.asarray(a["w1_bound"], float)[m][:, : K + 1]
        rel = (v / v.min(1, keepdims=True)).mean(0)
        ax.plot(np.arange(K + 1), rel, "-o", ms=3, color=f"C{c}", label=f"rho = {rho:g}")
        f = np.bincount(np.asarray(t["funnel"])[m].astype(int)).argmax()
        ax.plot(f, rel[f], "*", ms=10, color=f"C{c}", mec="k", mew=0.5)
    if m0.any():
        _layers(ax, K)
    ax.set_ylabel("W1 bound / its minimum over layers")
    ax.set_title("layers diag(1, rho, ..): star = funnel", fontsize=8)
    ax.legend(fontsize=6, title="mean of seeds", title_fontsize=6)
    ax = axes[0, 1]
    m = m0
    rho, dip, se = _f(t, "rho", m), _f(t, "funnel_dip", m), _f(t, "funnel_dip_se", m)
    K = np.asarray(t["depth"])[m] - 1
    inner = (np.asarray(t["funnel"])[m] > 0) & (np.asarray(t["funnel"])[m] < K)
    ax.errorbar(rho[inner], dip[inner], 2 * se[inner], fmt="o", ms=4, label="interior minimum (+- 2 s.e., paired)")
    ax.plot(rho[~inner], np.full((~inner).sum(), 1e-7), "kx", label="minimum at an end (plotted at 1e-7)")
    ax.set_yscale("log")
    ax.set_xlabel("anisotropy rho")
    ax.set_ylabel("(better end - minimum) / minimum")
    ax.set_title("depth of the funnel", fontsize=8)
    ax.legend(fontsize=6)
    return plotlib.save(fig, out, "funnel_linear", res.meta)


def plot(results_dir):
    res = store.load(results_dir)
    paths = []
    if _sel(res.table, arch="rank", mech="none").any():
        paths += _rank_fig(res, results_dir)
    if (np.asarray(res.table["mech"]) != "none").any():
        paths += _sdpi_fig(res, results_dir)
    if _sel(res.table, arch="aniso").any():
        paths += _funnel_fig(res, results_dir)
    return paths


def _within(cf, mc, se, k=3.0):
    ok = np.abs(cf - mc) <= k * se
    return int(ok.sum()), int(ok.size), float(np.max(np.abs(cf - mc) / se)) if ok.size else np.nan


def claims(results_dir) -> list:
    from jaxbench import report

    res = store.load(results_dir)
    t, a = res.table, res.arrays
    out = []
    none = _sel(t, mech="none")
    rows = []
    for name, cf, mc, se, m in (("KL term (r/2)log(n/(n-1))", "kl0", "kl0_mc", "kl0_mc_se", _sel(t)),
                                ("linear gap sigma^2 |B_K|_F^2/n", "gap_lin_cf", "gap_lin", "gap_lin_se", _sel(t)),
                                ("E|w|^2", "wnorm2_cf", "wnorm2_mc", "wnorm2_mc_se", _sel(t)),
                                ("E W2^2 at layer K", "w2sq_cf", "w2sq_mc", "w2sq_mc_se", none)):
        k, tot, worst = _within(_f(t, cf, m), _f(t, mc, m), _f(t, se, m))
        rows.append((name, k, tot, worst))
    g = _sel(t, mech="gauss")
    if g.any():
        kx, km, ks = (np.asarray(a[k], float)[g].ravel() for k in ("kl_exact", "kl_mc", "kl_mc_se"))
        fin = np.isfinite(kx) & np.isfinite(ks)
        kx, km, ks = kx[fin], km[fin], ks[fin]
        k, tot, worst = _within(kx, km, ks)
        rows.append(("Gaussian-injection I(w; U_l)", k, tot, worst))
    ok = all(k == tot and tot >= 2 for _, k, tot, _ in rows)
    out.append(report.check("our closed forms (rank / norm explicit) agree with Monte Carlo over training sets",
                            "; ".join(f"{n}: {k}/{tot} within 3 s.e. (worst {w:.1f} s.e.)" for n, k, tot, w in rows),
                            "all within 3 s.e., >= 2 cases each", ok, partly=True))
    r = _sel(t, arch="rank", mech="none")
    ranks, kl0 = _f(t, "rank_eff", r), _f(t, "kl0", r)
    n = np.asarray(t["n"], float)[r]
    ratio01 = np.sqrt(kl0 / 2) / (_f(t, "gap01", r) + 2 * _f(t, "gap01_se", r))
    slope = np.polyfit(np.log(ranks), np.log(kl0), 1)[0] if np.unique(ranks).size > 1 else np.nan
    out.append(report.check("the KL-type bound depends on the weights through their rank: sqrt((r/4) log(n/(n-1))) for the 0-1 loss",
                            f"KL term ~ r^{slope:.2f} over r = {sorted(set(ranks.astype(int).tolist()))} (n = {int(n[0]) if n.size else 0}); "
                            f"min bound / (MC 0-1 gap + 2 s.e.) {np.min(ratio01):.2f}",
                            "KL term linear in r; bound >= gap",
                            None if np.isnan(slope) else bool(np.isclose(slope, 1.0) and np.all(ratio01 >= 1))))
    w1K, w1s, cf, gl = _at_last(t, a, "w1_bound", r), _at_last(t, a, "w1_bound_se", r), _f(t, "w1_bound_cf", r), _f(t, "gap_lin", r)
    w1 = np.nanmin(np.asarray(a["w1_bound"], float)[r], 1)
    ok = bool(np.all(cf >= w1K - 3 * w1s) and np.all(w1 >= gl))
    out.append(report.check("the W1-type bound depends on the weights through their norms (|B_K|_F, |B_K mu|)",
                            f"closed form / MC-evaluated W1 bound {np.min(cf / w1K):.3f}-{np.max(cf / w1K):.3f}; "
                            f"min over layers of the MC W1 bound / linear gap {np.min(w1 / gl):.2f}-{np.max(w1 / gl):.2f} over |B_K|_F^2 "
                            f"{np.min(_f(t, 'frob2', r)):.2g}-{np.max(_f(t, 'frob2', r)):.2g}",
                            "closed form >= evaluated bound >= gap", ok))
    for mech, label in (("gauss", "Gaussian noise"), ("dropout", "Dropout"), ("dropconnect", "DropConnect")):
        m = _sel(t, mech=mech)
        if not m.any():
            out.append(report.check(f"SDPI contraction tightens the bound ({label})", "no rows", "-", None))
            continue
        Kx = int(np.asarray(t["depth"])[m][0]) - 1
        con, unc = np.asarray(a["klb_contracted"], float)[m][:, Kx], np.asarray(a["klb_uncontracted"], float)[m][:, Kx]
        gap = _f(t, "gap01", m) + 2 * _f(t, "gap01_se", m)
        eta = np.asarray(a["eta"], float)[m][:, 1:]
        ok = bool(np.all(con <= unc + 1e-15) and np.all(con >= gap))
        red = 1 - con / unc
        extra = ""
        if mech == "gauss":
            ex = np.asarray(a["klb_exact"], float)[m][:, Kx]
            extra = f"; exact bound / contracted {np.min(ex / con):.3f}-{np.max(ex / con):.3f}"
            ok &= bool(np.all(ex <= con + 1e-12))
        out.append(report.check(f"SDPI contraction tightens the layerwise KL bound ({label})",
                                f"eta per layer {np.nanmin(eta):.3g}-{np.nanmax(eta):.3g}; at layer K the contracted bound is "
                                f"{100 * np.min(red):.1f}-{100 * np.max(red):.1f}% below the uncontracted one; "
                                f"min contracted bound / (gap + 2 s.e.) {np.min(con / gap):.2f}{extra}",
                                "contracted <= uncontracted, >= gap, and a real reduction (> 5%)",
                                ok and bool(np.max(red) > 0.05), partly=ok))
    f = _sel(t, arch="aniso")
    if f.any():
        K = np.asarray(t["depth"])[f] - 1
        fu, dip, se = np.asarray(t["funnel"])[f], _f(t, "funnel_dip", f), _f(t, "funnel_dip_se", f)
        interior = (fu > 0) & (fu < K) & (dip > 3 * se)
        iso = _sel(t, arch="rank", mech="none")
        spread = np.asarray(a["w1_bound"], float)[iso]
        flat = np.max((np.nanmax(spread, 1) - np.nanmin(spread, 1)) / np.nanmin(spread, 1)) if iso.any() else np.nan
        out.append(report.check("the W1 bound's minimum over layers (funnel) can sit strictly inside the network",
                                f"anisotropic construction: interior funnel, > 3 s.e. below the better end, in "
                                f"{int(interior.sum())} of {int(f.sum())} variants (depth {dip.max() * 100:.2f}% at most); "
                                f"rank networks with isometric layers: W1 bound flat over layers (relative spread {flat:.1e})",
                                ">= 1 significant interior funnel", bool(interior.any())))
    return out
