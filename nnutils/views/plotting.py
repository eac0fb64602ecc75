"""Figures shared by the notebooks: image grids of pairs and triplets, thumbnails.

Every function returns a :class:`matplotlib.figure.Figure` and never calls ``show``;
:func:`save` writes PNGs at a consistent size for ``eda/`` and run folders.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve

from nnutils.data.images import try_read_rgb

__all__ = ["plot_importances", "plot_calibration", "plot_verify_range", "thumbnail", "image_grid", "pair_grid", "save", "plot_histories", "plot_roc", "metrics_table",
           "plot_f1_curves", "plot_pr", "plot_confusion", "plot_score_hist", "plot_groups", "plot_matches"]


def thumbnail(path: str | None, side: int = 256) -> tuple[np.ndarray, str | None]:
    """An RGB uint8 thumbnail (longer side ≤ ``side``) or a grey tile and the unreadable reason.

    Parameters
    ----------
    path : str or None
        The image file; None means the download failed.
    side : int, default 256
        Longest side in pixels (the image is subsampled by an integer step).

    Returns
    -------
    image : ndarray of uint8, shape (h, w, 3)
        The thumbnail, or a (side, side, 3) grey tile.
    reason : str or None
        None when readable, else why not (e.g. ``"truncated"``, ``"download failed"``).
    """
    if path is None:
        return np.full((side, side, 3), 200, np.uint8), "download failed"
    arr, reason = try_read_rgb(path)
    if arr is None:
        return np.full((side, side, 3), 200, np.uint8), reason
    h, w = arr.shape[:2]
    step = max(1, int(np.ceil(max(h, w) / side)))
    return arr[::step, ::step], None


def image_grid(rows: Sequence[Sequence[str | None]], titles: Sequence[Sequence[str]] | None = None,
               row_labels: Sequence[str] | None = None, tile: float = 2.6, suptitle: str | None = None):
    """A grid of images with optional titles; unreadable images show a grey tile and the reason.

    Parameters
    ----------
    rows : sequence of sequence of str or None
        ``rows[i][j]`` is a file path (None = missing); rows may differ in length.
    titles : sequence of sequence of str, optional
        Shaped like ``rows`` (wrapped at 32 characters).
    row_labels : sequence of str, optional
        One label per row, written left of it.
    tile : float, default 2.6
        Size of one tile in inches.
    suptitle : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Marked to be saved at 72 dpi by :func:`save`.
    """
    nr, nc = len(rows), max(len(r) for r in rows) if rows else 1
    fig, axes = plt.subplots(nr, nc, figsize=(tile * nc, tile * nr), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(nc):
            ax = axes[i][j]
            ax.axis("off")
            if j >= len(row):
                continue
            img, reason = thumbnail(row[j])
            ax.imshow(img)
            title = titles[i][j] if titles else ""
            if reason:
                title = f"unreadable: {reason}"
            ax.set_title("\n".join(textwrap.wrap(title, 32)), fontsize=8)
        if row_labels:
            axes[i][0].text(-0.05, 0.5, row_labels[i], transform=axes[i][0].transAxes, rotation=90,
                            ha="right", va="center", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97) if suptitle else None)
    if suptitle:
        fig.suptitle(suptitle)
    fig.nnutils_dpi = 72  # photo grids: smaller PNGs; charts keep save()'s default
    return fig


def pair_grid(pairs, path_of, n: int = 6, title_cols: Sequence[str] = (), suptitle: str | None = None):
    """Show the first ``n`` rows of a pairs table side by side (two columns per pair, two pairs per row).

    Parameters
    ----------
    pairs : DataFrame
        With ``image_url1``, ``image_url2`` (and ``is_same``, shown above the right image).
    path_of : dict of str to str or None
        Maps an ``image_url`` to a local path.
    n : int, default 6
        Pairs shown.
    title_cols : sequence of str, default ()
        Pair columns printed above the left image (e.g. ``("distortion",)``).
    suptitle : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    sub = pairs.head(n)
    rows, titles = [], []
    for r in sub.itertuples(index=False):
        rr = r._asdict()
        rows.append([path_of.get(rr["image_url1"]), path_of.get(rr["image_url2"])])
        label = " · ".join(str(rr[c]) for c in title_cols if c in rr and rr[c] not in ("", None))
        titles.append([label, f"is_same={rr.get('is_same', '?')}"])
    # two pairs per figure row keeps the figure readable
    flat_rows = [rows[i] + (rows[i + 1] if i + 1 < len(rows) else []) for i in range(0, len(rows), 2)]
    flat_titles = [titles[i] + (titles[i + 1] if i + 1 < len(titles) else []) for i in range(0, len(titles), 2)]
    return image_grid(flat_rows, flat_titles, suptitle=suptitle)


def save(fig, path: str | Path, dpi: int | None = None) -> Path:
    """Save ``fig`` as PNG (creating folders) and return the path.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : str or Path
    dpi : int, optional
        Defaults to 110 for charts and 72 for photo grids made by :func:`image_grid`.

    Returns
    -------
    Path
    """
    dpi = dpi or getattr(fig, "nnutils_dpi", 110)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def plot_histories(histories: dict, metric: str = "loss", title: str | None = None):
    """Training curves of one metric per run (validation dashed when present).

    Parameters
    ----------
    histories : dict
        Run label → a Keras ``History`` (or its ``.history`` dict).
    metric : str, default "loss"
        The history key plotted per epoch.
    title : str, optional
        Default: ``metric``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, h in histories.items():
        hist = getattr(h, "history", h)
        ax.plot(range(1, len(hist[metric]) + 1), hist[metric], marker="o", label=f"{label} train")
        if f"val_{metric}" in hist:
            ax.plot(range(1, len(hist[metric]) + 1), hist[f"val_{metric}"], ls="--", marker="x", label=f"{label} val")
    ax.set(xlabel="epoch", ylabel=metric, title=title or metric)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_roc(curves: dict, title: str = "ROC on validation pairs"):
    """ROC curves with the AUC in the legend (axes zoomed to FPR ≤ 0.3, TPR ≥ 0.7).

    Parameters
    ----------
    curves : dict of str to tuple
        Label → ``(y, scores)``: 0/1 labels and float scores of shape (N,); NaN scores are
        ignored.
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    from sklearn.metrics import roc_auc_score, roc_curve
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for label, (y, s) in curves.items():
        y, s = np.asarray(y), np.asarray(s, float)
        ok = ~np.isnan(s)
        fpr, tpr, _ = roc_curve(y[ok], s[ok])
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(y[ok], s[ok]):.4f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 0.3), ylim=(0.7, 1.0))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def metrics_table(results: dict, keys=("f1", "macro_f1", "roc_auc", "precision", "recall", "threshold",
                                       "hard_negative_fp_rate")):
    """A DataFrame of metric dicts, restricted to ``keys``, rounded for display.

    Parameters
    ----------
    results : dict of str to dict
        Label → metrics (e.g. :func:`nnutils.decide.scoring.evaluate`'s output).
    keys : sequence of str
        The metric columns (missing ones are NaN).

    Returns
    -------
    DataFrame
        Rows: labels; columns: ``keys``; floats rounded to 4 decimals.
    """
    import pandas as pd
    return pd.DataFrame({k: {m: v.get(m) for m in keys} for k, v in results.items()}).T.astype(float).round(4)


def plot_f1_curves(sweeps: dict, chosen: dict | None = None):
    """F1 (class 1) against threshold per model.

    Parameters
    ----------
    sweeps : dict of str to DataFrame
        Model → a :func:`nnutils.decide.thresholds.sweep` table.
    chosen : dict of str to float, optional
        Model → its chosen threshold (drawn as a dot).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, df in sweeps.items():
        line, = ax.plot(df.threshold, df.f1, label=name, lw=1.2)
        if chosen and name in chosen:
            t = chosen[name]
            ax.plot([t], [np.interp(t, df.threshold, df.f1)], "o", color=line.get_color())
    ax.set(xlabel="threshold on the score", ylabel="F1 (class 1)", ylim=(0.5, 1.0), title="F1 against threshold")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_pr(curves: dict, title: str = "Precision–recall"):
    """Precision–recall curves with the average precision in the legend.

    Parameters
    ----------
    curves : dict of str to tuple
        Label → ``(y, scores)``: 0/1 labels and float scores of shape (N,); NaN scores are
        ignored.
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for label, (y, s) in curves.items():
        y, s = np.asarray(y), np.asarray(s, float)
        ok = ~np.isnan(s)
        p, r, _ = precision_recall_curve(y[ok], s[ok])
        ax.plot(r, p, label=f"{label} (AP {average_precision_score(y[ok], s[ok]):.4f})")
    ax.set(xlabel="recall", ylabel="precision", title=title, xlim=(0.6, 1.0), ylim=(0.6, 1.01))
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def plot_confusion(y, scores, threshold: float, title: str = "Confusion matrix"):
    """Confusion matrix heatmap of ``scores >= threshold`` (NaN scores count as predicted 0).

    Parameters
    ----------
    y : array-like of 0/1, shape (N,)
    scores : array-like of float, shape (N,)
    threshold : float
    title : str, default "Confusion matrix"

    Returns
    -------
    matplotlib.figure.Figure
    """
    import seaborn as sns
    y = np.asarray(y).astype(int)
    pred = (np.nan_to_num(np.asarray(scores, float), nan=-np.inf) >= threshold).astype(int)
    cm = np.array([[((y == a) & (pred == b)).sum() for b in (0, 1)] for a in (0, 1)])
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax,
                xticklabels=["pred 0", "pred 1"], yticklabels=["true 0", "true 1"])
    ax.set_title(f"{title}\n(threshold {threshold:.3f})", fontsize=9)
    fig.tight_layout()
    return fig


def plot_score_hist(y, scores, threshold: float | None = None, title: str = "Scores by class"):
    """Histograms of the scores of duplicates and non-duplicates, with the threshold as a line.

    Parameters
    ----------
    y : array-like of 0/1, shape (N,)
    scores : array-like of float, shape (N,)
        NaN scores are left out.
    threshold : float, optional
        Drawn as a dashed vertical line.
    title : str, default "Scores by class"

    Returns
    -------
    matplotlib.figure.Figure
    """
    import seaborn as sns
    s = np.asarray(scores, float)
    ok = ~np.isnan(s)
    df = {"score": s[ok], "class": np.where(np.asarray(y)[ok] == 1, "same photo", "different")}
    fig, ax = plt.subplots(figsize=(6, 3.2))
    sns.histplot(df, x="score", hue="class", bins=50, ax=ax, stat="density", common_norm=False,
                 palette={"same photo": "#2a9d8f", "different": "#e76f51"})
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", lw=1)
    ax.set_title(title)
    fig.tight_layout()
    return fig



def plot_matches(path_or_img1, path_or_img2, kp1, kp2, verification, max_lines: int = 300, title: str | None = None):
    """Both images side by side with the local-feature matches of a :func:`nnutils.local.verify.verify`.

    Parameters
    ----------
    path_or_img1, path_or_img2 : path or RGB uint8 array
        The two images (an unreadable path is drawn as a grey tile).
    kp1, kp2 : nnutils.local.keypoints.Keypoints
        Their keypoints (``xy`` in original pixels).
    verification : nnutils.local.verify.Verification
        Gives the matches (``pairs``), the inlier mask and the numbers for the title.
    max_lines : int
        At most this many lines of each kind (inliers first), drawn as a random subset.
    title : str, optional
        Prefix of the title.

    Returns
    -------
    matplotlib.figure.Figure
        Inlier matches in green, outlier matches in faint red; the title gives inliers/matches,
        inlier ratio, coverages, spread, scale/rotation and the decision with its reason.
    """
    def load(x, size):
        if isinstance(x, np.ndarray):
            return x, None
        arr, reason = try_read_rgb(x) if x is not None else (None, "missing")
        if arr is None:
            w, h = size if size and size[0] > 0 else (256, 256)
            return np.full((h, w, 3), 200, np.uint8), reason
        return arr, None

    a, ra = load(path_or_img1, getattr(kp1, "image_size", None))
    b, rb = load(path_or_img2, getattr(kp2, "image_size", None))
    # draw both at the same height; keypoints are in original pixels of each image
    h = max(a.shape[0], b.shape[0])
    fa, fb = h / a.shape[0], h / b.shape[0]
    sa = (kp1.image_size[0] and a.shape[1] / kp1.image_size[0]) or 1.0
    sb = (kp2.image_size[0] and b.shape[1] / kp2.image_size[0]) or 1.0
    wa = a.shape[1] * fa
    fig, ax = plt.subplots(figsize=(11, 11 * h / (wa + b.shape[1] * fb) + 0.8))
    ax.imshow(a, extent=(0, wa, h, 0))
    ax.imshow(b, extent=(wa, wa + b.shape[1] * fb, h, 0))
    ax.set_xlim(0, wa + b.shape[1] * fb)
    ax.set_ylim(h, 0)
    ax.axis("off")
    v = verification
    pairs = np.asarray(getattr(v, "pairs", np.zeros((0, 2))), int).reshape(-1, 2)
    mask = np.asarray(getattr(v, "inlier_mask", np.zeros(len(pairs), bool)), bool)
    if len(mask) != len(pairs):
        mask = np.zeros(len(pairs), bool)
    rng = np.random.default_rng(0)
    for sel, colour, alpha, lw in ((~mask, "#e63946", 0.25, 0.6), (mask, "#2dc653", 0.8, 0.8)):
        idx = np.nonzero(sel)[0]
        if len(idx) > max_lines:
            idx = rng.choice(idx, max_lines, replace=False)
        if len(idx) == 0:
            continue
        p = kp1.xy[pairs[idx, 0]] * sa * fa
        q = kp2.xy[pairs[idx, 1]] * sb * fb + np.array([wa, 0])
        segs = np.stack([p, q], axis=1)
        from matplotlib.collections import LineCollection
        ax.add_collection(LineCollection(segs, colors=colour, alpha=alpha, linewidths=lw))
        ax.scatter(np.r_[p[:, 0], q[:, 0]], np.r_[p[:, 1], q[:, 1]], s=4, c=colour, alpha=alpha)
    if not getattr(v, "verifiable", False):
        text = f"not verifiable: {v.reason}"
    else:
        decision = "SAME photo" if v.passed else f"different ({v.reason})"
        text = (f"{v.inliers}/{v.matches} inliers (ratio {v.inlier_ratio:.2f}) · coverage {v.coverage1:.2f} / "
                f"{v.coverage2:.2f} · spread {v.spread:.2f} · scale {v.scale:.2f}, rot {v.rotation_deg:.1f}° "
                f"→ {decision}")
    for r, x in ((ra, wa / 2), (rb, wa + b.shape[1] * fb / 2)):
        if r:
            ax.text(x, h / 2, f"unreadable: {r}", ha="center", va="center", fontsize=9)
    ax.set_title("\n".join(textwrap.wrap((title + ": " if title else "") + text, 110)), fontsize=9)
    fig.tight_layout()
    return fig


def plot_groups(groups: pd.DataFrame, n_groups: int = 6, per_group: int = 6, suptitle: str | None = None):
    """Gallery of the largest duplicate groups: one row per group, its representative first.

    Each tile's title is the file name and the similarity to the representative ("keep" on
    the representative).

    Parameters
    ----------
    groups : DataFrame
        :func:`nnutils.scale.grouping.group_table`'s output.
    n_groups : int, default 6
        Groups shown (largest first).
    per_group : int, default 6
        Images shown per group.
    suptitle : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        A one-line note when there are no groups.
    """
    sizes = groups.drop_duplicates("group").set_index("group")["size"].sort_values(ascending=False, kind="stable")
    rows, titles, labels = [], [], []
    for g in sizes.index[:n_groups]:
        d = groups[groups.group == g].head(per_group)
        rows.append(d.path.tolist())
        titles.append([f"{Path(p).name}\n" + ("keep" if r else f"{s:.3f}")
                       for p, r, s in zip(d.path, d.representative, d.similarity)])
        labels.append(f"group {g} ({sizes[g]} images)")
    if not rows:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no duplicate groups", ha="center", va="center")
        return fig
    return image_grid(rows, titles, row_labels=labels, suptitle=suptitle)


def plot_importances(importances: pd.DataFrame, n: int = 15, title: str = "Permutation importance (held-out folds, F1)"):
    """Horizontal bars of the ``n`` most important features, with their spread.

    Parameters
    ----------
    importances : DataFrame with ``feature``, ``importance`` and ``std`` (e.g. ``Fusion.importances``)
    n : int
        How many features to show, most important on top.

    Returns
    -------
    matplotlib.figure.Figure
    """
    ax = importances.head(n).iloc[::-1].plot.barh(x="feature", y="importance", xerr="std", figsize=(7, 5),
                                                  legend=False, title=title)
    return ax.figure


def plot_calibration(y, p, title: str = "Calibration", n_bins: int = 8):
    """Reliability diagram: predicted probability against the observed share of duplicates.

    Parameters
    ----------
    y : (N,) 0/1 labels
    p : (N,) predicted probabilities in [0, 1] (e.g. out-of-fold)
    n_bins : int
        Quantile bins.

    Returns
    -------
    matplotlib.figure.Figure
    """
    frac, mean_p = calibration_curve(np.asarray(y, int), np.asarray(p, float), n_bins=n_bins, strategy="quantile")
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.plot(mean_p, frac, marker="o")
    ax.set(xlabel="predicted probability (out of fold)", ylabel="share that are duplicates", title=title)
    return fig


def plot_verify_range(scores, y, verify_range, threshold: float, label: str = "verified"):
    """Histogram of global scores by class, with the verified range and the global threshold.

    Parameters
    ----------
    scores : (N,) global cosine similarities (NaN ignored)
    y : (N,) 0/1 labels
    verify_range : (lo, hi) the verified scores (``hi`` may be ``inf``: drawn to the right edge)
    threshold : float
        The global threshold.

    Returns
    -------
    matplotlib.figure.Figure
    """
    s, y = np.asarray(scores, float), np.asarray(y, int)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for value, c in ((1, "tab:green"), (0, "tab:red")):
        ax.hist(s[(y == value) & np.isfinite(s)], bins=60, alpha=0.6, color=c, label=f"is_same={value}")
    lo, hi = verify_range
    ax.axvspan(lo, min(hi, np.nanmax(s) + 0.01), color="gold", alpha=0.3, label=label)
    ax.axvline(threshold, c="k", ls=":", label="global threshold")
    ax.set(xlabel="global cosine similarity", ylabel="pairs", yscale="log")
    ax.legend(fontsize=8)
    return fig
