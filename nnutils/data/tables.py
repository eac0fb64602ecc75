"""The embedded data's side tables, read in one place: which pairs are hard negatives, what each image is.

Every builder of the embedded data (:mod:`nnutils.data.synth`) writes two side tables next
to the LUN-format CSVs:

- ``metadata.csv``, one row per pair: ``split``, ``row`` (the pair's row in its split's CSV,
  i.e. the test ``ID``), ``image_url1``, ``image_url2``, ``is_same``, ``distortion`` (of a
  positive), ``negative_kind`` (of a negative: ``random``, ``other_crop``,
  ``similar_colour``, ``same_scene``, … ; empty for positives), ``photo1/2``,
  ``base1/2``, ``broken1/2``;
- ``images.csv``, one row per file: ``file``, ``photo_id``, ``base_id`` (one photograph),
  ``shoot``, ``role`` (``ref`` for a photo's original), ``distortion``, ``format``, ``mode``,
  ``width``, ``height``, ``bytes``, ``detail``, ``broken``, ``split``.

The test labels are ``test_labels.csv`` (``ID``, ``is_same``). Real competition data has
neither side table (and no test labels); every reader here then returns None or empty
strings, and callers skip the breakdowns.

Hard negatives have one definition, :func:`is_hard_negative`: every negative kind that is
not ``random`` and not empty, so the kinds a new dataset brings count automatically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["PAIR_TABLE", "IMAGE_TABLE", "TEST_LABELS", "EASY_NEGATIVE_KINDS", "read_pair_table",
           "read_image_table", "read_test_labels", "is_hard_negative", "hard_negative_kinds", "pair_kinds",
           "test_kinds", "image_column", "true_groups"]

PAIR_TABLE = "metadata.csv"
IMAGE_TABLE = "images.csv"
TEST_LABELS = "test_labels.csv"
#: negative kinds that are *not* hard (besides the empty kind of positives and unknown pairs)
EASY_NEGATIVE_KINDS = ("random",)
_KIND_COLUMNS = ["distortion", "negative_kind"]


def read_pair_table(data_dir, split: str | None = None) -> pd.DataFrame | None:
    """The pair table ``<data_dir>/metadata.csv``, optionally one split of it.

    Parameters
    ----------
    data_dir : str or Path
        The dataset folder.
    split : str, optional
        Keep only the rows of this split (``"train"`` or ``"test"``); None keeps all.

    Returns
    -------
    DataFrame or None
        One row per pair, all columns as strings except the numeric ones (``row``,
        ``is_same``); empty cells are empty strings, not NaN. The index is reset after
        selecting a split. None when the file does not exist (real data).
    """
    path = Path(data_dir) / PAIR_TABLE
    if not path.is_file():
        return None
    meta = pd.read_csv(path, keep_default_na=False)
    if split is not None:
        if "split" not in meta:
            raise ValueError(f"{path} has no 'split' column, cannot select split {split!r}")
        meta = meta[meta.split == split].reset_index(drop=True)
    return meta


def read_image_table(data_dir) -> pd.DataFrame | None:
    """The image table ``<data_dir>/images.csv``, indexed by file name.

    Parameters
    ----------
    data_dir : str or Path
        The dataset folder.

    Returns
    -------
    DataFrame or None
        One row per file, index ``file`` (the file name, no folder), empty cells as empty
        strings. None when the file does not exist or has no ``file`` column (real data).
    """
    path = Path(data_dir) / IMAGE_TABLE
    if not path.is_file():
        return None
    im = pd.read_csv(path, keep_default_na=False)
    if "file" not in im:
        return None
    return im.set_index("file")


def read_test_labels(data_dir, ids) -> np.ndarray | None:
    """The test labels ``is_same`` of the pairs ``ids``, from ``<data_dir>/test_labels.csv``.

    Parameters
    ----------
    data_dir : str or Path
        The dataset folder.
    ids : sequence of int, length N
        Test pair IDs (the ``ID`` column of ``test.csv`` / of a submission).

    Returns
    -------
    ndarray of int64, shape (N,), or None
        0/1 labels aligned with ``ids``; None when the file does not exist (real data).

    Raises
    ------
    KeyError
        When some of ``ids`` have no label (names up to five of them).
    ValueError
        When the file lacks the ``ID`` or ``is_same`` column.
    """
    path = Path(data_dir) / TEST_LABELS
    if not path.is_file():
        return None
    lab = pd.read_csv(path)
    if not {"ID", "is_same"} <= set(lab):
        raise ValueError(f"{path} must have the columns ID and is_same, has {list(lab)}")
    y = lab.drop_duplicates("ID").set_index("ID").is_same.reindex(np.asarray(list(ids)))
    if y.isna().any():
        missing = list(y.index[y.isna()][:5])
        raise KeyError(f"{path}: no label for {int(y.isna().sum())} of {len(y)} IDs, e.g. {missing}")
    return y.to_numpy(np.int64)


def is_hard_negative(negative_kind):
    """Whether each negative kind is a hard one: any kind that is not ``random`` and not empty.

    Parameters
    ----------
    negative_kind : str, or array-like of str, shape (N,)
        ``negative_kind`` values (empty string, None or NaN for positives and unknown pairs).

    Returns
    -------
    bool, or ndarray of bool, shape (N,)
        True for hard kinds (``other_crop``, ``same_scene``, ``similar_colour`` today, and
        every kind a new dataset brings), False for ``random`` and empty values.
    """
    if np.ndim(negative_kind) == 0:
        k = "" if pd.isna(negative_kind) else str(negative_kind)
        return bool(k) and k not in EASY_NEGATIVE_KINDS
    k = pd.Series(np.asarray(negative_kind, dtype=object)).fillna("").astype(str)
    return ((k.str.len() > 0) & ~k.isin(EASY_NEGATIVE_KINDS)).to_numpy()


def hard_negative_kinds(table) -> list[str]:
    """The hard negative kinds present in a table, sorted.

    Parameters
    ----------
    table : DataFrame with a ``negative_kind`` column, or array-like of str
        A pair table (e.g. :func:`read_pair_table`) or the kinds themselves.

    Returns
    -------
    list of str
        Distinct kinds for which :func:`is_hard_negative` holds; empty when there are none
        (or the table has no ``negative_kind`` column).
    """
    if isinstance(table, pd.DataFrame):
        if "negative_kind" not in table:
            return []
        table = table.negative_kind
    kinds = pd.Series(np.asarray(table, dtype=object)).fillna("").astype(str).unique()
    return sorted(k for k in kinds if is_hard_negative(k))


def pair_kinds(data_dir, pairs: pd.DataFrame, split: str | None = "train") -> pd.DataFrame:
    """``pairs`` with the embedded data's ``distortion`` / ``negative_kind`` columns attached.

    Parameters
    ----------
    data_dir : str or Path
        The dataset folder.
    pairs : DataFrame
        Pairs with ``image_url1`` and ``image_url2`` (e.g. notebook 02's train or validation
        pairs, both carved from the ``train`` split).
    split : str, optional
        The metadata split the pairs come from; None looks in all splits.

    Returns
    -------
    DataFrame
        ``pairs`` (same rows, same order, index reset) with any previous ``distortion`` /
        ``negative_kind`` columns replaced by the metadata's, matched on (``image_url1``,
        ``image_url2``); empty strings where the metadata has no such pair, and for every
        pair on real data (no ``metadata.csv``).
    """
    meta = read_pair_table(data_dir, split)
    if meta is None:
        return pairs.assign(distortion="", negative_kind="")
    keys = ["image_url1", "image_url2"]
    meta = meta[keys + _KIND_COLUMNS].drop_duplicates(keys)
    out = pairs.drop(columns=[c for c in _KIND_COLUMNS if c in pairs]).merge(meta, on=keys, how="left")
    return out.fillna({"distortion": "", "negative_kind": ""})


def test_kinds(data_dir, ids) -> pd.DataFrame:
    """``distortion`` and ``negative_kind`` of test pairs by ``ID``.

    Parameters
    ----------
    data_dir : str or Path
        The dataset folder.
    ids : sequence of int, length N
        Test pair IDs (the metadata's ``row`` in the ``test`` split).

    Returns
    -------
    DataFrame, N rows
        Columns ``distortion`` and ``negative_kind`` aligned with ``ids`` (index 0..N-1);
        empty strings for unknown IDs and for every pair on real data.
    """
    ids = list(ids)
    meta = read_pair_table(data_dir, "test")
    if meta is None:
        return pd.DataFrame({c: [""] * len(ids) for c in _KIND_COLUMNS})
    out = meta.drop_duplicates("row").set_index("row")[_KIND_COLUMNS].reindex(ids)
    return out.fillna("").reset_index(drop=True)


def image_column(data_dir, paths: Sequence[str], column: str, default=None) -> np.ndarray | None:
    """One column of the image table for each path, matched by file name.

    Parameters
    ----------
    data_dir : str or Path
        The dataset folder.
    paths : sequence of str or Path, length N
        Image files (only the name is used).
    column : str
        A column of ``images.csv``, e.g. ``"split"``, ``"role"``, ``"photo_id"``, ``"base_id"``.
    default : object, optional
        The value for files the table does not list.

    Returns
    -------
    ndarray of object, shape (N,), or None
        The column's value for each path (``default`` for unknown files); None when there is
        no ``images.csv`` or it has no such column (real data).
    """
    im = read_image_table(data_dir)
    if im is None or column not in im:
        return None
    col = im[column]
    col = col[~col.index.duplicated()]
    names = [Path(p).name for p in paths]
    return np.array([col.get(n, default) for n in names], dtype=object)


def true_groups(data_dir, paths: Sequence[str]) -> np.ndarray | None:
    """The embedded dataset's ground truth: the ``base_id`` (one photograph) of each path, by file name.

    Parameters
    ----------
    data_dir : str or Path
        The dataset folder.
    paths : sequence of str or Path, length N
        Image files.

    Returns
    -------
    ndarray of object, shape (N,), or None
        The group label of each path; a file the table does not know is its own group
        (its path as a string). None when ``images.csv`` or its ``base_id`` column is
        absent (real data).
    """
    base = image_column(data_dir, paths, "base_id", default=None)
    if base is None:
        return None
    return np.array([str(p) if b is None else b for b, p in zip(base, paths)], dtype=object)
