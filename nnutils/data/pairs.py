"""The LUN.UA pair formats: reading and validating CSVs, resolving image URLs, the unreadable-image policy.

Formats (Kaggle, CSC 2023 hackathon):

==============  ==========================================
train           ``image_url1,image_url2,is_same``
test            ``ID,image_url1,image_url2``
labels          ``ID,is_same``  (the embedded data's held-out test labels)
submission      ``ID,is_same``
==============  ==========================================

An ``image_url`` is an ``http(s)://`` URL (downloaded once into a cache), an absolute
path, or a path relative to an images folder (so files under a Kaggle input folder work
unchanged). Every problem in a CSV raises :class:`PairsCSVError` naming the file, the
line (the header is line 1, as in an editor) and the problem.

Unreadable-image policy (one rule, used by every notebook and the predict command):
    A pair with an image that cannot be read (missing file, failed download, zero bytes,
    truncated, corrupt, not an image, too large) cannot be judged from its pixels.
    *Training and validation* drop the pair and record it, with the reason, in a
    ``dropped_pairs.csv``; *prediction* answers ``0`` (not the same photo: a duplicate
    that cannot be seen cannot be confirmed) and counts those pairs in its report.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from nnutils.data.download import fetch_urls, is_url
from nnutils.data.images import inspect_images

__all__ = [
    "PairsCSVError", "SCHEMAS", "UNREADABLE_POLICY", "read_pairs", "validate_pairs",
    "unique_urls", "resolve_images", "image_status", "unreadable_reasons", "drop_unreadable",
]

SCHEMAS: dict[str, tuple[str, ...]] = {
    "train": ("image_url1", "image_url2", "is_same"),
    "test": ("ID", "image_url1", "image_url2"),
    "labels": ("ID", "is_same"),
    "submission": ("ID", "is_same"),
}
UNREADABLE_POLICY = (
    "pairs with an unreadable image are dropped from training/validation (recorded in "
    "dropped_pairs.csv) and predicted 0 at submission time (counted in the report)"
)
_MAX_LISTED = 5


class PairsCSVError(ValueError):
    """A pairs CSV is malformed.

    Parameters
    ----------
    file : str or Path
        The CSV (or ``"<DataFrame>"`` for a table in memory).
    problem : str
        What is wrong, for humans.
    line : int or iterable of int, optional
        The 1-based line(s) at fault (header = 1); a one-element iterable becomes an int.
        The message lists at most a few lines and counts the rest.

    Attributes
    ----------
    file : str
    problem : str
    line : int or list of int or None
    """

    def __init__(self, file: str | Path, problem: str, line: int | Iterable[int] | None = None):
        self.file, self.problem = str(file), problem
        if line is not None and not isinstance(line, (int, np.integer)):
            line = list(line)
            line = line[0] if len(line) == 1 else line
        self.line = line
        where = ""
        if isinstance(line, list):
            shown = ", ".join(map(str, line[:_MAX_LISTED]))
            more = f" (+{len(line) - _MAX_LISTED} more)" if len(line) > _MAX_LISTED else ""
            where = f" line{'s' if len(line) > 1 else ''} {shown}{more}:"
        elif line is not None:
            where = f" line {line}:"
        super().__init__(f"{self.file}:{where} {problem}")


def _lines(mask: pd.Series) -> list[int]:
    """Editor line numbers of the True rows (data row i is on line i + 2)."""
    return [int(i) + 2 for i in np.flatnonzero(mask.to_numpy())]


def detect_kind(columns: Iterable[str]) -> str | None:
    """Which pairs CSV a header belongs to.

    Parameters
    ----------
    columns : iterable of str
        The column names.

    Returns
    -------
    str or None
        ``"train"`` (``image_url1, image_url2, is_same`` without ``ID``), ``"test"`` (image
        URLs with ``ID``, or without ``is_same``), ``"labels"`` (``ID, is_same``), or None
        when the header fits none.
    """
    cols = set(columns)
    if {"image_url1", "image_url2"} <= cols:
        return "train" if "is_same" in cols and "ID" not in cols else "test"
    if {"ID", "is_same"} <= cols:
        return "labels"
    return None


def read_pairs(path: str | Path, kind: str = "auto") -> pd.DataFrame:
    """Read and validate a LUN pairs CSV.

    Parameters
    ----------
    path : str or Path
        The CSV file (UTF-8; a BOM and spaces around values are tolerated).
    kind : str, default "auto"
        One of ``"train"``, ``"test"``, ``"labels"``, ``"submission"`` or ``"auto"`` (from
        the header, :func:`detect_kind`).

    Returns
    -------
    DataFrame
        The schema's columns first (stripped strings for URLs, ``int64`` for ``ID`` and
        ``is_same``) followed by any extra columns; index reset.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    PairsCSVError
        When it is a directory, empty, not a well-formed UTF-8 CSV, or fails
        :func:`validate_pairs`.
    ValueError
        When ``kind`` is not a known kind.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such pairs CSV")
    if path.is_dir():
        raise PairsCSVError(path, "is a directory, expected a CSV file")
    text_head = path.read_bytes()[:4096]
    if not text_head.strip():
        raise PairsCSVError(path, "the file is empty (expected a header such as "
                                  f"{','.join(SCHEMAS['train'] if kind == 'auto' else SCHEMAS[kind])})")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.ParserError as e:
        raise PairsCSVError(path, f"not a well-formed CSV ({e})") from None
    except UnicodeDecodeError:
        raise PairsCSVError(path, "not a UTF-8 text file") from None
    df.columns = [c.strip().lstrip("\ufeff") for c in df.columns]
    return validate_pairs(df, kind=kind, source=path)


def validate_pairs(df: pd.DataFrame, kind: str = "auto", source: str | Path = "<DataFrame>") -> pd.DataFrame:
    """Validate a pairs table already in memory (see :func:`read_pairs`); returns a clean copy.

    Parameters
    ----------
    df : DataFrame
        The table, values as strings (or anything ``astype("string")`` accepts).
    kind : str, default "auto"
        As in :func:`read_pairs`.
    source : str or Path, default "<DataFrame>"
        Named in error messages.

    Returns
    -------
    DataFrame
        A copy with the schema's columns first (stripped strings; ``ID`` and ``is_same`` as
        ``int64``) followed by any extra columns; index reset.

    Raises
    ------
    PairsCSVError
        On an unrecognised header, a missing column, no data rows, an empty/NaN value, an
        ``is_same`` other than 0/1, a non-integer or duplicate ``ID`` (naming the lines).
    ValueError
        When ``kind`` is not a known kind.
    """
    if kind == "auto":
        kind = detect_kind(df.columns)
        if kind is None:
            raise PairsCSVError(source, f"unrecognised header {list(df.columns)}; expected one of "
                                        + "; ".join(f"{k}: {','.join(v)}" for k, v in SCHEMAS.items()))
    if kind not in SCHEMAS:
        raise ValueError(f"kind must be one of {sorted(SCHEMAS)} or 'auto', got {kind!r}")
    need = SCHEMAS[kind]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise PairsCSVError(source, f"missing column(s) {missing} for a {kind} CSV; "
                                    f"found {list(df.columns)}, expected {','.join(need)}", line=1)
    if len(df) == 0:
        raise PairsCSVError(source, f"header only, no data rows (a {kind} CSV needs at least one pair)")
    df = df.copy()
    for c in need:
        col = df[c].astype("string").str.strip()
        empty = col.isna() | (col == "") | col.str.lower().isin(["nan", "none", "null"])
        if empty.any():
            raise PairsCSVError(source, f"empty or NaN value in column {c!r}", line=_lines(empty))
        df[c] = col.astype(str)
    if "is_same" in need:
        ok = df["is_same"].isin(["0", "1", "0.0", "1.0"])
        if not ok.all():
            bad = df.loc[~ok, "is_same"].iloc[0]
            raise PairsCSVError(source, f"is_same must be 0 or 1, found {bad!r}", line=_lines(~ok))
        df["is_same"] = df["is_same"].astype(float).astype("int64")
    if "ID" in need:
        ok = df["ID"].str.fullmatch(r"-?\d+")
        if not ok.all():
            raise PairsCSVError(source, f"ID must be an integer, found {df.loc[~ok, 'ID'].iloc[0]!r}",
                                line=_lines(~ok))
        df["ID"] = df["ID"].astype("int64")
        dup = df["ID"].duplicated(keep=False)
        if dup.any():
            raise PairsCSVError(source, f"duplicate ID {int(df.loc[dup, 'ID'].iloc[0])}", line=_lines(dup))
    rest = [c for c in df.columns if c not in need]
    return df[list(need) + rest].reset_index(drop=True)


def unique_urls(pairs: pd.DataFrame) -> list[str]:
    """All distinct image URLs/paths of a pairs table, in first-seen order.

    Parameters
    ----------
    pairs : DataFrame
        With ``image_url1`` and ``image_url2``.

    Returns
    -------
    list of str
        ``image_url1`` values before ``image_url2`` values, duplicates removed.
    """
    return list(dict.fromkeys(pd.concat([pairs.image_url1, pairs.image_url2]).tolist()))


def resolve_images(urls: Iterable[str], images_dir: str | Path | None = None, *,
                   cache_dir: str | Path | None = None, workers: int = 8, progress: bool = True) -> pd.Series:
    """Map each image URL/path to a local file path.

    Relative paths are joined to ``images_dir``; absolute paths are kept; ``http(s)``
    URLs are downloaded concurrently (:func:`nnutils.data.download.fetch_urls`).

    Parameters
    ----------
    urls : iterable of str
        Image URLs or paths (duplicates are resolved once).
    images_dir : str or Path, optional
        Base folder of relative paths; the current folder when None.
    cache_dir : str or Path, optional
        Where downloads go (default ``<images_dir>/../cache``); failures are recorded in
        ``cache_dir/failures.csv``.
    workers : int, default 8
        Concurrent downloads.
    progress : bool, default True
        Show a progress bar while downloading.

    Returns
    -------
    Series of str or None
        Indexed by URL, named ``path``: the local file, or None when the download failed.
        The files are not checked for existence.
    """
    urls = list(dict.fromkeys(urls))
    base = Path(images_dir) if images_dir is not None else Path(".")
    out: dict[str, str | None] = {}
    remote = [u for u in urls if is_url(u)]
    if remote:
        cache = Path(cache_dir) if cache_dir else base.parent / "cache"
        got = fetch_urls(remote, cache, workers=workers, progress=progress)
        out.update({r.url: (str(r.path) if r.ok else None) for r in got.itertuples()})
    for u in urls:
        if u not in out:
            p = Path(u)
            out[u] = str(p if p.is_absolute() else base / p)
    return pd.Series(out, name="path", dtype=object)


def image_status(paths: pd.Series, progress: bool = True) -> pd.DataFrame:
    """Readability of every resolved image: :func:`nnutils.data.images.inspect_images` per URL.

    Parameters
    ----------
    paths : Series of str or None
        The output of :func:`resolve_images` (URL → local path or None).
    progress : bool, default True
        Show a progress bar.

    Returns
    -------
    DataFrame
        Indexed by URL in the order of ``paths``, with at least ``path``, ``readable`` and
        ``reason`` (``"download failed"`` for URLs that never arrived) and the other
        :class:`~nnutils.data.images.ImageInfo` fields.
    """
    have = paths.dropna()
    info = inspect_images(have.tolist(), progress=progress)
    info.index = have.index
    failed = paths.index[paths.isna()]
    if len(failed):
        info = pd.concat([info, pd.DataFrame({"path": None, "readable": False, "reason": "download failed"},
                                             index=failed)])
    return info.reindex(paths.index)


def unreadable_reasons(pairs: pd.DataFrame, status: pd.DataFrame) -> pd.Series:
    """Per pair, why it cannot be judged (e.g. ``"image2 truncated"``), or ``""`` when both images read.

    Prediction applies the policy as ``is_same = 0`` where the reason is not empty.

    Parameters
    ----------
    pairs : DataFrame, N rows
        With ``image_url1`` and ``image_url2``.
    status : DataFrame
        The output of :func:`image_status` (indexed by URL).

    Returns
    -------
    Series of str, length N
        Indexed like ``pairs``, named ``reason``: ``"image1 <reason>"``, ``"image2 <reason>"``,
        both joined by ``"; "``, or ``""``.
    """
    reason = status["reason"].where(~status["readable"].astype(bool))
    r1 = pairs.image_url1.map(reason)
    r2 = pairs.image_url2.map(reason)
    both = ("image1 " + r1).fillna("").str.cat(("image2 " + r2).fillna(""), sep="; ")
    return both.str.strip("; ").rename("reason")


def drop_unreadable(pairs: pd.DataFrame, status: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training-side policy: split ``pairs`` into the pairs kept and those dropped for an unreadable image.

    Parameters
    ----------
    pairs : DataFrame
        With ``image_url1`` and ``image_url2``.
    status : DataFrame
        The output of :func:`image_status`.

    Returns
    -------
    kept : DataFrame
        Pairs whose two images read (index reset).
    dropped : DataFrame
        The other pairs, with a ``reason`` column (:func:`unreadable_reasons`; index reset).
    """
    reason = unreadable_reasons(pairs, status)
    bad = reason != ""
    return pairs[~bad].reset_index(drop=True), pairs[bad].assign(reason=reason[bad]).reset_index(drop=True)


def load_lun_folder(data_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Read a LUN-format data folder.

    Parameters
    ----------
    data_dir : str or Path
        A folder with ``train.csv`` and optionally ``test.csv``, ``test_labels.csv``,
        ``metadata.csv`` and ``images.csv``.

    Returns
    -------
    dict of str to DataFrame
        ``"train"`` plus, when present, ``"test"``, ``"test_labels"`` (the embedded data's
        held-out labels), ``"metadata"`` (one row per pair: distortion and negative kinds) and
        ``"images"`` (one row per image: source photo, role, broken). The pairs CSVs are
        validated (:func:`read_pairs`).

    Raises
    ------
    FileNotFoundError
        When there is no ``train.csv`` (the message says how to build the embedded data).
    PairsCSVError
        When a pairs CSV is malformed.
    """
    d = Path(data_dir)
    if not (d / "train.csv").exists():
        raise FileNotFoundError(
            f"{d}: no train.csv. Build the embedded data with `python -m nnutils.synth --out {d}`, "
            "or point data_dir at the LUN.UA competition folder")
    out = {"train": read_pairs(d / "train.csv", "train")}
    if (d / "test.csv").exists():
        out["test"] = read_pairs(d / "test.csv", "test")
    if (d / "test_labels.csv").exists():
        out["test_labels"] = read_pairs(d / "test_labels.csv", "labels")
    for extra in ("metadata", "images"):
        if (d / f"{extra}.csv").exists():
            out[extra] = pd.read_csv(d / f"{extra}.csv", keep_default_na=False)
    return out
