"""Shared matplotlib helpers: one publication style for every figure, read from results files.

Every figure gets labelled axes, a colour bar where colour encodes a value, error bands over
seeds (mean +- standard error), and a footer naming the experiment, preset and variant count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

STYLE = {
    "figure.dpi": 110, "savefig.dpi": 160, "font.size": 9, "axes.titlesize": 10,
    "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.25, "lines.linewidth": 1.5, "lines.markersize": 4,
    "savefig.bbox": "tight", "image.cmap": "viridis",
}


def _pyplot():
    """pyplot with the Agg backend, imported on first use: a sweep run without figures,
    ``--dry-run`` and ``jaxbench list`` never load it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def __getattr__(name: str):  # ``plot.plt`` for the experiments' figure code
    if name == "plt":
        return _pyplot()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def figure(nrows: int = 1, ncols: int = 1, width: float = 3.4, height: float = 2.8, **kw):
    """A figure of ``nrows x ncols`` panels of ``width x height`` inches each. Returns (fig, axes)."""
    plt = _pyplot()
    plt.rcParams.update(STYLE)
    kw.setdefault("squeeze", False)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + 0.3),
                             constrained_layout=True, **kw)
    return fig, (axes[0, 0] if axes.size == 1 else axes)


def footer_text(meta: dict) -> str:
    commit = (meta.get("git_commit") or "")[:8]
    return (f"jaxbench · {meta.get('experiment')} · preset {meta.get('scale')} · "
            f"{meta.get('n_variants')} variants · {meta.get('backend', '')}"
            + (f" · {commit}" if commit else ""))


def save(fig, results_dir, name: str, meta: dict) -> list[Path]:
    """Adds the footer, writes ``name.png`` and ``name.pdf`` into results_dir, closes the figure."""
    fig.text(0.0, -0.01, footer_text(meta), fontsize=6.5, color="0.45", ha="left", va="top",
             transform=fig.transFigure)
    paths = [Path(results_dir) / f"{name}.{ext}" for ext in ("png", "pdf")]
    for p in paths:
        fig.savefig(p)
    _pyplot().close(fig)
    return paths


def aggregate(table: dict, by: list[str], value: str, where=None):
    """Mean, standard error and count of ``table[value]`` per distinct combination of ``by``.

    where: optional boolean mask over rows. Non-finite values are left out of the mean.
    Returns ``(keys, mean, sem, count)``: keys a sorted list of tuples, the rest (m,) arrays.
    """
    mask = np.ones(len(table[value]), bool) if where is None else np.asarray(where)
    vals = np.asarray(table[value], float)
    cols = [np.asarray(table[b]) for b in by]
    keys = sorted({tuple(c[i].item() for c in cols) for i in np.flatnonzero(mask)})
    mean, sem, count = [], [], []
    for key in keys:
        sel = mask.copy()
        for c, k in zip(cols, key):
            sel &= c == k
        v = vals[sel]
        v = v[np.isfinite(v)]
        mean.append(v.mean() if v.size else np.nan)
        sem.append(v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else 0.0)
        count.append(v.size)
    return keys, np.array(mean), np.array(sem), np.array(count)


def grid_of(table: dict, x: str, y: str, value: str, where=None):
    """Mean of ``value`` on the (y, x) grid: returns ``(xs, ys, Z (len(ys), len(xs)))``."""
    keys, mean, _, _ = aggregate(table, [x, y], value, where)
    xs = sorted({k[0] for k in keys})
    ys = sorted({k[1] for k in keys})
    Z = np.full((len(ys), len(xs)), np.nan)
    for (kx, ky), m in zip(keys, mean):
        Z[ys.index(ky), xs.index(kx)] = m
    return np.array(xs), np.array(ys), Z


def heatmap(ax, xs, ys, Z, *, xlabel, ylabel, cbar_label, contour=None, contour_label=None,
            vmin=None, vmax=None, cmap="viridis", fmt="{:.2f}", annotate=True, norm=None,
            outline=None, outline_label=None, text=None):
    """Phase diagram: Z (len(ys), len(xs)) on a categorical grid.

    contour: optional second (len(ys), len(xs)) array drawn as labelled contour lines (they cross
    cell centres, where the annotations are: prefer ``outline`` with annotations).
    outline: optional boolean (len(ys), len(xs)) mask whose region is outlined along cell edges
    (a staircase that never crosses a cell's label), named ``outline_label`` in a legend.
    text: optional (len(ys), len(xs)) array of strings to write in the cells instead of ``fmt(Z)``.
    norm: optional matplotlib norm (e.g. ``LogNorm``) instead of vmin / vmax.
    """
    kw = {"norm": norm} if norm is not None else {"vmin": vmin, "vmax": vmax}
    im = ax.imshow(Z, origin="lower", aspect="auto", cmap=cmap, interpolation="nearest", **kw)
    ax.set_xticks(range(len(xs)), [_tick(v) for v in xs])
    ax.set_yticks(range(len(ys)), [_tick(v) for v in ys])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(False)
    cb = ax.figure.colorbar(im, ax=ax)
    cb.set_label(cbar_label)
    if annotate and Z.size <= 120:
        for i in range(Z.shape[0]):
            for j in range(Z.shape[1]):
                if np.isfinite(Z[i, j]):
                    r, g, b, _ = im.cmap(im.norm(Z[i, j]))
                    light = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # dark cell: white text
                    label = fmt.format(Z[i, j]) if text is None else text[i][j]
                    ax.text(j, i, label, ha="center", va="center", fontsize=6,
                            color="white" if light else "black")
    if outline is not None:
        _outline(ax, np.asarray(outline, bool), outline_label)
    if contour is not None and np.isfinite(contour).sum() >= 4 and min(contour.shape) >= 2:
        cs = ax.contour(np.arange(len(xs)), np.arange(len(ys)), contour, colors="white",
                        linewidths=0.9, linestyles="--")
        ax.clabel(cs, fontsize=6, fmt="%.2g")
        if contour_label:
            ax.plot([], [], "w--", label=contour_label)
            leg = ax.legend(loc="upper left", fontsize=6, framealpha=0.5)
            leg.get_frame().set_facecolor("0.3")
            for t in leg.get_texts():
                t.set_color("white")
    return im


def _outline(ax, mask, label=None, color="red"):
    """Draws the boundary of the cells where ``mask`` holds, along cell edges (imshow grid)."""
    ny, nx = mask.shape
    segs = []
    for i in range(ny):
        for j in range(nx):
            if not mask[i, j]:
                continue
            if i == 0 or not mask[i - 1, j]:
                segs.append([(j - 0.5, i - 0.5), (j + 0.5, i - 0.5)])
            if i == ny - 1 or not mask[i + 1, j]:
                segs.append([(j - 0.5, i + 0.5), (j + 0.5, i + 0.5)])
            if j == 0 or not mask[i, j - 1]:
                segs.append([(j - 0.5, i - 0.5), (j - 0.5, i + 0.5)])
            if j == nx - 1 or not mask[i, j + 1]:
                segs.append([(j + 0.5, i - 0.5), (j + 0.5, i + 0.5)])
    from matplotlib.collections import LineCollection

    ax.add_collection(LineCollection(segs, colors=color, linewidths=2.0, capstyle="projecting"))
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    if label:
        ax.plot([], [], color=color, lw=2.0, label=label)
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, 1.0), fontsize=6, framealpha=0.85)


def _tick(v):
    v = v.item() if hasattr(v, "item") else v
    return f"{v:g}" if isinstance(v, float) else str(v)


def band(ax, x, mean, err, label=None, **line_kw):
    """A line with a shaded mean +- err band."""
    x, mean, err = (np.asarray(a, float) for a in (x, mean, err))
    line_kw.setdefault("marker", "o")
    (line,) = ax.plot(x, mean, label=label, **line_kw)
    ax.fill_between(x, mean - err, mean + err, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


# ----------------------------------------------------------------------------- table helpers


def mode(col, where):
    """Most frequent value of ``col`` among rows ``where`` (ties: the smallest)."""
    vals, counts = np.unique(np.asarray(col)[where], return_counts=True)
    return vals[np.argmax(counts)]


def nearest(col, where, target):
    """The value of ``col`` among rows ``where`` closest to ``target``."""
    vals = np.unique(np.asarray(col)[where])
    return vals[np.argmin(np.abs(vals - target))]


def at_mode(t, where, keys):
    """``where`` restricted to the most frequent value of each of ``keys`` (one slice of the grid)."""
    sel = np.asarray(where).copy()
    for k in keys:
        if k in t:
            sel &= t[k] == mode(t[k], sel)
    return sel


def no_data(ax, why):
    """Marks an empty panel with the reason."""
    ax.text(0.5, 0.5, f"no data: {why}", ha="center", va="center", transform=ax.transAxes, fontsize=8)


def slope_guide(ax, x, y0, power, label):
    """Dotted ``y0 * (x / x[0])^power`` reference line."""
    x = np.asarray(sorted(x), float)
    ax.plot(x, y0 * (x / x[0]) ** power, ":", color="0.4", lw=1, label=label)


def line(ax, t, x, y, where, label=None, **kw):
    """Mean +- s.e. of column ``y`` against column ``x`` over rows ``where`` (a `band`); None if empty."""
    keys, mean, sem, _ = aggregate(t, [x], y, where=where)
    if not keys:
        return None
    return band(ax, [k[0] for k in keys], mean, sem, label=label, **kw)


def loglog_slope(x, y):
    """Least-squares slope and intercept of ``log y`` against ``log x`` (positive finite pairs only);
    ``(nan, nan)`` with fewer than two distinct x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if len(np.unique(x[ok])) < 2:
        return np.nan, np.nan
    slope, icpt = np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)
    return float(slope), float(icpt)
