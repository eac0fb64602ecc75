"""Exploratory analysis of a LUN-format dataset: the tables and figures of notebook 01.

All functions take the tables from :func:`nnutils.data.pairs.load_lun_folder` and
:func:`scan_images`; plotting functions return a matplotlib ``Figure``.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from tqdm.auto import tqdm

from nnutils.data.images import file_digest, pixel_digest
from nnutils.data.pairs import image_status, resolve_images, unique_urls

__all__ = ["scan_images", "class_balance", "identical_positives", "summary_table",
           "plot_class_balance", "plot_sizes", "plot_modes", "plot_unreadable"]


def scan_images(pairs_tables: list[pd.DataFrame], images_dir, *, digests: bool = True,
                progress: bool = True) -> pd.DataFrame:
    """Resolve and inspect every image referenced by the given pair tables.

    Parameters
    ----------
    pairs_tables : list of DataFrame
        Pair tables with ``image_url1`` and ``image_url2``.
    images_dir : str or Path
        Folder the images are resolved in (:func:`nnutils.data.download.resolve_images`).
    digests : bool, default True
        Also hash each readable image's file bytes and decoded pixels.
    progress : bool, default True
        Show tqdm progress bars.

    Returns
    -------
    DataFrame
        One row per distinct ``image_url`` (the index) with ``path``, ``readable``,
        ``reason``, ``format``, ``mode``, ``width``, ``height`` (pixels), ``n_frames``,
        ``file_bytes``, ``has_alpha``, ``aspect`` (width / height) and, with ``digests``,
        ``file_sha1`` and ``pixel_sha1`` (SHA-1 hex; None for unreadable images).
    """
    urls = list(dict.fromkeys(u for t in pairs_tables for u in unique_urls(t)))
    paths = resolve_images(urls, images_dir, progress=progress)
    info = image_status(paths, progress=progress)
    info["aspect"] = info["width"] / info["height"]
    if digests:
        fsha, psha = [], []
        for url, r in tqdm(info.iterrows(), total=len(info), desc="hashing", disable=not progress):
            ok = bool(r["readable"])
            fsha.append(file_digest(r["path"]) if ok else None)
            psha.append(pixel_digest(r["path"]) if ok else None)
        info["file_sha1"], info["pixel_sha1"] = fsha, psha
    return info


def class_balance(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Pairs, positives, negatives and positive rate per split.

    Parameters
    ----------
    tables : dict of str to DataFrame
        Split name → pairs table; tables without an ``is_same`` column are skipped.

    Returns
    -------
    DataFrame
        One row per labelled split: ``split``, ``pairs``, ``positives``, ``negatives`` and
        ``positive_rate`` (share in [0, 1], rounded to 4 decimals).
    """
    rows = []
    for name, t in tables.items():
        if "is_same" not in t:
            continue
        pos = int(t.is_same.sum())
        rows.append(dict(split=name, pairs=len(t), positives=pos, negatives=len(t) - pos,
                         positive_rate=round(pos / len(t), 4)))
    return pd.DataFrame(rows)


def identical_positives(pairs: pd.DataFrame, scan: pd.DataFrame) -> pd.Series:
    """Classify each positive pair as byte-identical, pixel-identical, different or unreadable.

    Parameters
    ----------
    pairs : DataFrame
        Pairs with ``image_url1``, ``image_url2`` and ``is_same``.
    scan : DataFrame
        :func:`scan_images`' table with digests (``file_sha1``, ``pixel_sha1``).

    Returns
    -------
    Series of str
        Indexed like the positive rows of ``pairs``, named ``identity``:
        ``"byte-identical"``, ``"pixel-identical"``, ``"different"`` or ``"unreadable"``.
    """
    pos = pairs[pairs.is_same == 1]
    f1, f2 = pos.image_url1.map(scan.file_sha1), pos.image_url2.map(scan.file_sha1)
    p1, p2 = pos.image_url1.map(scan.pixel_sha1), pos.image_url2.map(scan.pixel_sha1)
    out = np.where(f1.isna() | f2.isna(), "unreadable",
                   np.where(f1 == f2, "byte-identical", np.where(p1 == p2, "pixel-identical", "different")))
    return pd.Series(out, index=pos.index, name="identity")


def summary_table(tables: dict[str, pd.DataFrame], scan: pd.DataFrame) -> pd.DataFrame:
    """One tidy ``metric, value`` table of the dataset's key numbers (written to ``eda/summary.csv``).

    Parameters
    ----------
    tables : dict of str to DataFrame
        Split name → pairs table; unlabelled tables count pairs only.
    scan : DataFrame
        :func:`scan_images`' table; with digests and a ``train`` table, the shares of
        identical train positives are added.

    Returns
    -------
    DataFrame
        Columns ``metric`` (str) and ``value`` (number): pair counts and positive rates per
        split, image counts, unreadable images by reason, median width / height (pixels) and
        aspect, counts per colour mode and file format.
    """
    rows = [(f"{name}: pairs", len(t)) for name, t in tables.items() if "is_same" not in t]
    for r in class_balance(tables).itertuples():
        rows += [(f"{r.split}: pairs", r.pairs), (f"{r.split}: positive rate", r.positive_rate)]
    rows += [("distinct images", len(scan)), ("unreadable images", int((~scan.readable.astype(bool)).sum()))]
    for reason, n in scan.reason.dropna().value_counts().items():
        rows.append((f"unreadable: {reason}", int(n)))
    ok = scan[scan.readable.astype(bool)]
    rows += [("median width (px)", float(ok.width.median())), ("median height (px)", float(ok.height.median())),
             ("median aspect (w/h)", round(float(ok.aspect.median()), 3))]
    for mode, n in ok["mode"].value_counts().items():
        rows.append((f"mode {mode}", int(n)))
    for fmt, n in ok["format"].value_counts().items():
        rows.append((f"format {fmt}", int(n)))
    if "train" in tables and "file_sha1" in scan:
        ident = identical_positives(tables["train"], scan).value_counts(normalize=True)
        for k, v in ident.items():
            rows.append((f"train positives {k} (share)", round(float(v), 4)))
    return pd.DataFrame(rows, columns=["metric", "value"])


def plot_class_balance(tables: dict[str, pd.DataFrame]):
    """Bar chart of positives and negatives per split.

    Parameters
    ----------
    tables : dict of str to DataFrame
        Split name → pairs table (as :func:`class_balance`).

    Returns
    -------
    matplotlib.figure.Figure
        One axes with a labelled bar per split and class.
    """
    cb = class_balance(tables).melt(id_vars="split", value_vars=["positives", "negatives"],
                                    var_name="class", value_name="count")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    sns.barplot(cb, x="split", y="count", hue="class", ax=ax, palette=["#2a9d8f", "#e76f51"])
    for c in ax.containers:
        ax.bar_label(c, fontsize=8)
    ax.set_title("Class balance (is_same)")
    fig.tight_layout()
    return fig


def plot_sizes(scan: pd.DataFrame):
    """Width × height scatter and aspect-ratio histogram of readable images.

    Parameters
    ----------
    scan : DataFrame
        :func:`scan_images`' table (``readable``, ``width``, ``height``, ``format``, ``aspect``).

    Returns
    -------
    matplotlib.figure.Figure
        Two axes: the size scatter (pixels, coloured by format) and the aspect histogram.
    """
    ok = scan[scan.readable.astype(bool)]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    sns.scatterplot(ok, x="width", y="height", hue="format", s=14, alpha=0.6, ax=a)
    a.set_title("Image sizes (px)")
    sns.histplot(ok, x="aspect", bins=40, ax=b, color="#457b9d")
    b.set_title("Aspect ratio (width / height)")
    fig.tight_layout()
    return fig


def plot_modes(scan: pd.DataFrame):
    """Counts of original colour modes (RGB, L, RGBA, P, …) and file formats.

    Parameters
    ----------
    scan : DataFrame
        :func:`scan_images`' table (``readable``, ``mode``, ``format``).

    Returns
    -------
    matplotlib.figure.Figure
        Two axes of labelled count bars.
    """
    ok = scan[scan.readable.astype(bool)]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    sns.countplot(ok, x="mode", ax=a, order=ok["mode"].value_counts().index, color="#8ab17d")
    a.set_title("Colour mode as stored")
    sns.countplot(ok, x="format", ax=b, order=ok["format"].value_counts().index, color="#e9c46a")
    b.set_title("File format")
    for ax in (a, b):
        for c in ax.containers:
            ax.bar_label(c, fontsize=8)
    fig.tight_layout()
    return fig


def plot_unreadable(scan: pd.DataFrame):
    """Unreadable images by reason (the pairs that the unreadable-image policy will touch).

    Parameters
    ----------
    scan : DataFrame
        :func:`scan_images`' table (``readable``, ``reason``).

    Returns
    -------
    matplotlib.figure.Figure
        One axes of counts per reason, or a note that every image is readable.
    """
    bad = scan[~scan.readable.astype(bool)]
    fig, ax = plt.subplots(figsize=(5, 2.8))
    if len(bad):
        sns.countplot(bad, y="reason", ax=ax, color="#e76f51")
        for c in ax.containers:
            ax.bar_label(c, fontsize=8)
    else:
        ax.text(0.5, 0.5, "every image is readable", ha="center", va="center")
    ax.set_title(f"Unreadable images: {len(bad)} of {len(scan)}")
    fig.tight_layout()
    return fig
