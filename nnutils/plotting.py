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

from .images import try_read_rgb

__all__ = ["thumbnail", "image_grid", "pair_grid", "save", "plot_histories", "plot_roc", "metrics_table",
           "plot_f1_curves", "plot_pr", "plot_confusion", "plot_score_hist"]


def thumbnail(path: str | None, side: int = 256) -> tuple[np.ndarray, str | None]:
    """An RGB uint8 thumbnail (longer side ≤ ``side``) or a grey tile and the unreadable reason."""
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
    """A grid of images: ``rows[i][j]`` is a file path (None = missing), with optional titles."""
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
    """Show the first ``n`` rows of a pairs table side by side (two columns per pair).

    ``path_of`` maps an ``image_url`` to a local path; ``title_cols`` are pair columns
    printed above the left image (e.g. ``("distortion",)``).
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

    ``dpi`` defaults to 110 for charts and 72 for photo grids made by :func:`image_grid`.
    """
    dpi = dpi or getattr(fig, "nnutils_dpi", 110)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def plot_histories(histories: dict, metric: str = "loss", title: str | None = None):
    """Training curves: ``histories`` maps a run label to a Keras ``History`` (or its ``.history`` dict)."""
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
    """ROC curves: ``curves`` maps a label to ``(y, scores)``; NaN scores are ignored. AUC in the legend."""
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
    """A DataFrame of metric dicts (rows: labels) restricted to ``keys``, rounded for display."""
    import pandas as pd
    return pd.DataFrame({k: {m: v.get(m) for m in keys} for k, v in results.items()}).T.astype(float).round(4)


def plot_f1_curves(sweeps: dict, chosen: dict | None = None):
    """F1 (class 1) against threshold per model; ``sweeps`` maps a model to a :func:`nnutils.thresholds.sweep`
    table; ``chosen`` maps a model to its chosen threshold (drawn as a dot)."""
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
    """Precision–recall curves: ``curves`` maps a label to ``(y, scores)`` (NaN ignored); AP in the legend."""
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
    """Confusion matrix heatmap of ``scores >= threshold`` (NaN scores count as predicted 0)."""
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
    """Histograms of the scores of duplicates and non-duplicates, with the threshold as a line."""
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
