"""Claim checks of Experiment 1 (`jaxbench.report.Check` rows), computed from results files only.

Each sweep gets its regime checks (is the run in the lazy regime the claim is about: the issue's
bars) and the parts of the claim it can test, with the numbers behind each verdict.
"""

from __future__ import annotations

import numpy as np

from jaxbench import report, store
from jaxbench.experiments.benign import stats

CLAIM = "Zhu et al. 2023"


def _pct(x):
    return f"{100 * x:.2f}%"


def _seeds(t, where):
    return len(np.unique(t["seed"][where]))


def plane(results_dir) -> list[report.Check]:
    t = store.load(results_dir).table
    ok = ~t["diverged"]
    gd = ok & (t["optimizer"] == "gd") & (t["init_noise"] == 0)
    out = []
    b = stats.bars(t, ok)
    if b is None:
        return [report.check("lazy regime (bars)", "no centred GD variant with alpha >= 16", "-", None)]
    where = f"width {b['width']}, alpha {b['alphas']}, eta {b['etas']}: {b['rows']} variants"
    out.append(report.check(
        "regime: lazy at the widest width, alpha >= 16 (weight movement)",
        f"mean {b['move']:.4f}, max {b['move_max']:.4f} ({where})", f"mean <= {stats.BAR_MOVE}",
        b["move"] <= stats.BAR_MOVE))
    per = ", ".join(f"eta {e:g}: {_pct(v)}" for e, v in b["disagree_by_eta"].items())
    out.append(report.check(
        "regime: the network tracks its NTK limit (sign disagreement on test points)",
        f"mean {_pct(b['disagree'])} ({per})", f"mean <= {_pct(stats.BAR_DISAGREE)}",
        b["disagree"] <= stats.BAR_DISAGREE))
    per = ", ".join(f"eta {e:g}: {v:+.4f}" for e, v in b["err_gap_by_eta"].items())
    out.append(report.check(
        "regime: clean test error equals the NTK limit's",
        f"{b['err']:.4f} vs limit {b['err_limit']:.4f} (network - limit per eta: {per})",
        f"|difference| <= {stats.BAR_ERR}", abs(b["err"] - b["err_limit"]) <= stats.BAR_ERR))
    fit = stats.movement_fit(t, gd)
    out.append(report.check(
        "regime: weight movement ~ 1 / (alpha sqrt m)",
        f"fit log movement = a log alpha + b log m: a = {fit['slope_alpha']:.3f}, b = {fit['slope_m']:.3f} "
        f"({fit['n']} variants)", "a within 20% of -1 and b within 0.15 of -0.5",
        abs(fit["slope_alpha"] + 1) <= 0.2 and abs(fit["slope_m"] + 0.5) <= 0.15
        if np.isfinite(fit["slope_alpha"]) else None, partly=True))
    lo, hi = np.min(t["alpha"][gd]), np.max(t["alpha"][gd])
    lazy_lo, lazy_hi = (np.mean(t["lazy_limit_disagree"][gd & (t["alpha"] == a)]) for a in (lo, hi))
    out.append(report.check(
        "regime: as alpha grows the network converges to its lazy limit (Chizat-Bach)",
        f"sign disagreement with the lazy limit, all widths and eta: {_pct(lazy_lo)} at alpha {lo:g}, "
        f"{_pct(lazy_hi)} at alpha {hi:g}", "decreases, <= 0.1% at the largest alpha",
        lazy_hi < lazy_lo and lazy_hi <= 1e-3, partly=lazy_hi < lazy_lo))
    top = gd & (t["alpha"] == hi)
    slope = np.polyfit(np.log(t["width"][top]), np.log(t["ntk_limit_dist"][top]), 1)[0] if top.any() else np.nan
    out.append(report.check(
        "regime: the gap to the NTK limit closes with width",
        f"function distance |f - f_NTK| / |f_NTK| ~ m^{slope:.2f} at alpha {hi:g}", "slope < -0.3",
        slope < -0.3 if np.isfinite(slope) else None))
    fit_all = np.mean(t["train_err"][ok] == 0)
    rates = np.unique(np.round(t["flip_rate"][ok], 6))
    out.append(report.check(
        f"{CLAIM}: interpolating networks fit the noisy labels exactly",
        f"{_pct(fit_all)} of {ok.sum()} variants reach zero training error; realized flip rates "
        f"{', '.join(f'{r:.4f}' for r in rates)}", "100% interpolate", fit_all == 1.0))
    wide = gd & (t["width"] == b["width"]) & (t["alpha"] >= stats.BAR_ALPHA)
    risks = {float(e): (np.mean(t["excess_risk_clean"][wide & (t["eta"] == e)]),
                        np.mean(t["ntk_limit_excess_risk_clean"][wide & (t["eta"] == e)]))
             for e in np.unique(t["eta"][wide])}
    out.append(report.check(
        f"{CLAIM}: overfitting is benign at n = {int(np.max(t['n']))} (expected excess risk (1 - 2 eta) x clean error)",
        "; ".join(f"eta {e:g}: network {r:.4f}, NTK limit {lim:.4f}" for e, (r, lim) in risks.items()),
        "<= 0.01 at every eta (Bayes-optimality itself is asymptotic: benign_n_growth)",
        all(r <= 0.01 for r, _ in risks.values()), partly=True))
    out += _sgd(t, ok)
    out += _smooth(t, ok, gd)
    return out


def _sgd(t, ok):
    sgd = ok & (t["optimizer"] == "sgd")
    if not sgd.any():
        return []
    w, eta = np.max(t["width"][sgd]), np.max(t["eta"][sgd])
    sgd &= (t["width"] == w) & (t["eta"] == eta)
    gd = ok & (t["optimizer"] == "gd") & (t["init_noise"] == 0) & (t["width"] == w) & (t["eta"] == eta)
    lazy = sgd & (t["alpha"] >= stats.BAR_ALPHA)
    e_s, e_g, e_l = (np.mean(t[c][m]) for c, m in [("clean_test_err", lazy), ("clean_test_err", gd & (t["alpha"] >= 16)),
                                                   ("ntk_limit_clean_err", lazy)])
    fit, move, dis = np.mean(t["train_err"][sgd] == 0), np.mean(t["weight_move"][lazy]), np.mean(t["ntk_limit_disagree"][lazy])
    return [report.check(
        f"{CLAIM}: minibatch SGD (Algorithm 1) in the lazy regime meets the same bars as GD",
        f"width {w}, eta {eta:g}, {sgd.sum()} SGD variants ({_seeds(t, sgd)} seeds), interpolate {_pct(fit)}; at alpha "
        f">= 16: movement {move:.4f}, sign disagreement with the (GD) NTK limit {_pct(dis)}, clean error {e_s:.4f} vs "
        f"limit {e_l:.4f} (GD: {e_g:.4f})",
        f"all interpolate; movement <= {stats.BAR_MOVE}, disagreement <= {_pct(stats.BAR_DISAGREE)}, "
        f"|error - limit's| <= {stats.BAR_ERR}",
        fit == 1 and move <= stats.BAR_MOVE and dis <= stats.BAR_DISAGREE and abs(e_s - e_l) <= stats.BAR_ERR,
        partly=fit == 1)]


def _smooth(t, ok, gd):
    out = []
    for col, what in [("lip_pair_rel", "Lip_pair / f_rms (difference quotients at the data's scale)"),
                      ("lip_grad_rel", "Lip_grad / f_rms (largest input gradient)")]:
        rho = np.array([v for v in stats.per_seed_spearman(t, gd, col, "excess_risk_clean").values() if np.isfinite(v)])
        if rho.size < 2:
            continue
        m, se = rho.mean(), rho.std(ddof=1) / np.sqrt(rho.size)
        out.append(report.check(
            f"{CLAIM}: smoother interpolators generalize better (paired within seeds, over width x alpha)",
            f"{what}: Spearman rho per (seed, eta), mean {m:.2f} +- {se:.2f} (s.e.) over {rho.size}, "
            f"range {rho.min():.2f}..{rho.max():.2f}", "mean - 2 s.e. > 0 (smoother = lower risk)",
            m - 2 * se > 0, partly=m > 0))
    iv = stats.intervention_mask(t, ok)
    if iv.any():
        s_r, se_r, n = stats.paired_slope(t, iv, "init_noise", "excess_risk_clean")
        s_l, se_l, _ = stats.paired_slope(t, iv, "init_noise", "lip_pair_rel")
        lv = sorted(np.unique(t["init_noise"][iv]))
        means = [(np.mean(t["lip_pair_rel"][iv & (t["init_noise"] == v)]),
                  np.mean(t["excess_risk_clean"][iv & (t["init_noise"] == v)])) for v in lv]
        out.append(report.check(
            f"{CLAIM}: intervention at fixed architecture: a rougher interpolator (initial function kept, "
            "weight init_noise) generalizes worse",
            f"init_noise {[float(v) for v in lv]}: Lip_pair/f_rms {', '.join(f'{a:.2f}' for a, _ in means)}; excess risk "
            f"{', '.join(f'{r:.4f}' for _, r in means)}; within-seed slopes ({n} seeds): risk {s_r:+.4f} +- {se_r:.4f}, "
            f"Lip {s_l:+.3f} +- {se_l:.3f} per unit init_noise",
            "both slopes > 2 s.e. (smoothness and risk move together)",
            s_r > 2 * se_r and s_l > 2 * se_l if n > 1 else None))
    return out


def n_growth(results_dir) -> list[report.Check]:
    t = store.load(results_dir).table
    ok = ~t["diverged"]
    ns = np.unique(t["n"][ok])
    mean = lambda c, n: float(np.mean(t[c][ok & (t["n"] == n)]))  # noqa: E731
    row = lambda c, pct=False: ", ".join(_pct(mean(c, n)) if pct else f"{mean(c, n):.4f}" for n in ns)  # noqa: E731
    hdr = f"n = {', '.join(str(n) for n in ns)} ({'n = d' if stats.n_equals_d(t) else 'd fixed'}; " \
          f"{_seeds(t, ok)} seeds)"
    exact = np.all(np.isclose(t["flip_rate"] * t["n"], np.round(t["eta"] * t["n"]), atol=1e-3))
    out = [report.check(
        "setting: exact label noise (round(eta n) flips)",
        f"realized training flip rates {row('flip_rate')} at eta "
        f"{', '.join(f'{e:g}' for e in np.unique(t['eta']))}", "flip_rate x n = round(eta n) in every variant",
        bool(exact))]
    moves = [mean("weight_move", n) for n in ns]
    out.append(report.check(
        "regime: the networks are lazy at every n (weight movement)", f"{hdr}: {row('weight_move')}",
        f"<= {stats.BAR_MOVE} at every n", max(moves) <= stats.BAR_MOVE))
    dis = [mean("ntk_limit_disagree", n) for n in ns]
    out.append(report.check(
        "regime: the networks track the NTK limit at every n (sign disagreement)",
        f"{row('ntk_limit_disagree', True)}; lazy limit vs NTK limit (kernel part): {row('kernel_disagree', True)}",
        f"<= {_pct(stats.BAR_DISAGREE)} at every n", max(dis) <= stats.BAR_DISAGREE, partly=min(dis) <= stats.BAR_DISAGREE))
    lim = [mean("ntk_limit_clean_err", n) for n in ns]
    out.append(report.check(
        f"{CLAIM}: Bayes-optimal test error as n grows, NTK limit (the infinitely wide lazy network)",
        f"clean test error {row('ntk_limit_clean_err')}; excess risk (1 - 2 eta) x clean "
        f"{row('ntk_limit_excess_risk_clean')}", "decreases with n (Spearman < 0) and <= 0.005 at the largest n",
        stats.spearman(ns, lim) < 0 and lim[-1] <= 0.005, partly=stats.spearman(ns, lim) < 0))
    net = [mean("clean_test_err", n) for n in ns]
    w = int(np.max(t["width"][ok]))
    out.append(report.check(
        f"{CLAIM}: Bayes-optimal test error as n grows, finite lazy networks (width {w})",
        f"clean test error {row('clean_test_err')} (its lazy limit {row('lazy_limit_clean_err')}); excess risk "
        f"noisy - eta {row('excess_risk')}; Spearman(n, error) {stats.spearman(ns, net):+.2f}",
        "decreases with n (Spearman < 0) and <= 0.005 at the largest n",
        stats.spearman(ns, net) < 0 and net[-1] <= 0.005, partly=stats.spearman(ns, net) < 0))
    return out


def regression(results_dir) -> list[report.Check]:
    t = store.load(results_dir).table
    ok = ~t["diverged"]
    w = np.max(t["width"][ok])
    wide = ok & (t["width"] == w)
    out = [report.check(
        "regime: lazy at the widest width (weight movement)",
        f"width {w}: mean {np.mean(t['weight_move'][wide]):.4f}, max {np.max(t['weight_move'][wide]):.4f} "
        f"({wide.sum()} variants)", f"mean <= {stats.BAR_MOVE}", np.mean(t["weight_move"][wide]) <= stats.BAR_MOVE,
        partly=True)]
    rel = []
    lines = []
    for sg in np.unique(t["sigma"][wide]):
        for al in np.unique(t["init_scale"][wide]):
            s = wide & (t["sigma"] == sg) & (t["init_scale"] == al)
            net, cf = np.mean(t["test_mse"][s]), np.mean(t["ntk_limit_mse_expected"][s])
            rel.append(abs(net - cf) / cf)
            lines.append(f"sigma {sg:g}, s {al:g}: {net:.3f} vs {cf:.3f}")
    out.append(report.check(
        f"{CLAIM}: the error settles at a constant set by label and initialization noise "
        "(network vs closed form label part + s^2 x init part, s the initialization noise)",
        f"width {w}, {_seeds(t, wide)} seeds: " + "; ".join(lines), "within 20% for every (sigma, s)",
        max(rel) <= 0.2 if rel else None, partly=np.median(rel) <= 0.2 if rel else False))
    widths = np.unique(t["width"][ok])
    gaps = [np.mean(np.abs(t["test_mse"] - t["ntk_limit_mse"])[ok & (t["width"] == m)] /
                    t["ntk_limit_mse"][ok & (t["width"] == m)]) for m in widths]
    out.append(report.check(
        "regime: the network approaches its NTK limit with width (same initial function)",
        "mean |test MSE - limit's| / limit's: " + ", ".join(f"m {m}: {g:.3f}" for m, g in zip(widths, gaps)),
        "decreases with width", all(np.diff(gaps) < 0), partly=gaps[-1] < gaps[0]))
    return out


def mnist(results_dir) -> list[report.Check]:
    t = store.load(results_dir).table
    ns = np.unique(t["n"])
    mean = lambda c, n: float(np.mean(t[c][t["n"] == n]))  # noqa: E731
    big = ns[-1]
    out = [report.check(
        f"{CLAIM} (data assumption, our reading): differently-labelled MNIST images are separated, delta > 0",
        f"smallest distance between differently-labelled images (unit-norm pixels): "
        + ", ".join(f"n {n}: {np.min(t['sep_min'][t['n'] == n]):.3f}" for n in ns)
        + f"; conflicting duplicates {int(np.sum(t['conflicting_pairs']))}",
        "delta > 0 in every subset", bool(np.all(t["sep_min"] > 0)))]
    rel = [mean("sep_min_rel", n) for n in ns]
    out.append(report.check(
        "data: how well-separated (delta relative to the median pairwise distance, vs subset size)",
        ", ".join(f"n {n}: {r:.3f}" for n, r in zip(ns, rel)),
        "delta / median >= 0.1 at the largest n (a margin of the order of the data's scale)",
        rel[-1] >= 0.1, partly=rel[-1] > 0))
    out.append(report.check(
        "data: nearest neighbours share the label (1-NN margin (nn_diff - nn_same) / 2 > 0)",
        f"n {big}: {_pct(mean('margin_pos', big))} of images; median nn_diff / nn_same {mean('nn_ratio_med', big):.3f}; "
        f"1% quantile of the margin {mean('margin_q01', big):+.4f}",
        "margin > 0 for every image (a separation of the labelled points)",
        mean("margin_pos", big) == 1.0, partly=mean("margin_pos", big) > 0.5))
    return out
