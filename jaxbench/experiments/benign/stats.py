"""Summaries of the classification tables shared by the figures and the claim checks (numpy only)."""

from __future__ import annotations

import numpy as np

from jaxbench import plot as plotlib

# The bars for the committed default results, at the widest width with alpha >= 16
BAR_MOVE = 0.1        # mean relative weight movement <=
BAR_DISAGREE = 0.02   # mean sign disagreement with the NTK limit <=
BAR_ERR = 0.01        # |mean clean test error - the NTK limit's| <=
BAR_ALPHA = 16.0


def hardest_eta(t, where):
    """The largest noise rate among rows ``where`` (where the gaps are largest)."""
    return np.max(t["eta"][where]) if np.any(where) else np.nan


def movement_fit(t, where) -> dict:
    """Least squares ``log movement = c + a log alpha + b log m`` over rows ``where``:
    ``{"slope_alpha": a, "slope_m": b, "intercept": c, "n": rows}`` (NaN without two alphas and widths)."""
    al, m, mv = (np.asarray(t[k][where], float) for k in ("alpha", "width", "weight_move"))
    ok = (mv > 0) & np.isfinite(mv)
    if len(np.unique(al[ok])) < 2 or len(np.unique(m[ok])) < 2:
        return {"slope_alpha": np.nan, "slope_m": np.nan, "intercept": np.nan, "n": int(ok.sum())}
    A = np.stack([np.ones(ok.sum()), np.log(al[ok]), np.log(m[ok])], 1)
    c, a, b = np.linalg.lstsq(A, np.log(mv[ok]), rcond=None)[0]
    return {"slope_alpha": float(a), "slope_m": float(b), "intercept": float(c), "n": int(ok.sum())}


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either is constant."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.nan
    return float(spearmanr(x, y).statistic)


def per_seed_spearman(t, where, x, y) -> dict:
    """``{(eta, seed): rho}``: Spearman rho of columns x and y over the variants of one seed and
    noise rate (same data: the pairing that removes the data sample's share of the error)."""
    out = {}
    for eta in np.unique(t["eta"][where]):
        for sd in np.unique(t["seed"][where]):
            s = where & (t["eta"] == eta) & (t["seed"] == sd)
            out[(float(eta), int(sd))] = spearman(t[x][s], t[y][s])
    return out


def intervention_mask(t, ok):
    """Rows of the init_noise intervention: the (width, alpha, eta) that has init_noise > 0 rows,
    with its init_noise = 0 rows (GD only)."""
    iv = ok & (t["init_noise"] > 0) & (t["optimizer"] == "gd")
    if not iv.any():
        return np.zeros_like(ok)
    w, al, eta = (plotlib.mode(t[k], iv) for k in ("width", "alpha", "eta"))
    return ok & (t["optimizer"] == "gd") & (t["width"] == w) & (t["alpha"] == al) & (t["eta"] == eta)


def paired_slope(t, where, x, y) -> tuple[float, float, int]:
    """Mean and s.e. over seeds of the within-seed least-squares slope of y on x; number of seeds."""
    slopes = []
    for sd in np.unique(t["seed"][where]):
        s = where & (t["seed"] == sd)
        if len(np.unique(t[x][s])) >= 2:
            slopes.append(np.polyfit(np.asarray(t[x][s], float), np.asarray(t[y][s], float), 1)[0])
    if not slopes:
        return np.nan, np.nan, 0
    se = np.std(slopes, ddof=1) / np.sqrt(len(slopes)) if len(slopes) > 1 else np.nan
    return float(np.mean(slopes)), float(se), len(slopes)


def n_equals_d(t) -> bool:
    return bool(np.all(t["n"] == t["d"]))


def bars(t, ok) -> dict | None:
    """The bar quantities at the widest GD width with alpha >= BAR_ALPHA (centred, init_noise 0)."""
    base = ok & (t["optimizer"] == "gd") & (t["init_noise"] == 0) & (t["alpha"] >= BAR_ALPHA)
    if "centered" in t:
        base &= np.asarray(t["centered"], bool)
    if not base.any():
        return None
    w = np.max(t["width"][base])
    sel = base & (t["width"] == w)
    return {"width": int(w), "rows": int(sel.sum()), "alphas": sorted(float(a) for a in np.unique(t["alpha"][sel])),
            "etas": sorted(float(e) for e in np.unique(t["eta"][sel])),
            "move": float(np.mean(t["weight_move"][sel])), "move_max": float(np.max(t["weight_move"][sel])),
            "disagree": float(np.mean(t["ntk_limit_disagree"][sel])),
            "disagree_by_eta": {float(e): float(np.mean(t["ntk_limit_disagree"][sel & (t["eta"] == e)]))
                                for e in np.unique(t["eta"][sel])},
            "err": float(np.mean(t["clean_test_err"][sel])), "err_limit": float(np.mean(t["ntk_limit_clean_err"][sel])),
            "err_gap_by_eta": {float(e): float(np.mean(t["gap_clean_err"][sel & (t["eta"] == e)]))
                               for e in np.unique(t["eta"][sel])}}
