"""Find the groups of near-duplicate images in a collection (a folder or a CSV of paths/URLs).

Every image is embedded once (:func:`nnutils.models.embedders.embed_cached`: batched,
cached by content), a faiss index (:mod:`nnutils.scale.index`) gives each image's ``k``
nearest neighbours, and links at or above the threshold are joined into groups
(:mod:`nnutils.scale.grouping`). Memory is O(N·k), not the O(N²) of a dense similarity
matrix. Each group keeps one image (by default the largest); the others are the files to
remove. Unreadable files are listed with their reason and never grouped.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from nnutils.data.images import inspect_image
from nnutils.data.pairs import resolve_images
from nnutils.decide.decision import Decision
from nnutils.decide.predict import resolve_verification
from nnutils.models.embedders import embed_cached
from nnutils.scale.grouping import group_edges, grouping_options, neighbour_edges
from nnutils.scale.index import build_index, index_kind, search

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def list_images(folder, extensions: Sequence[str] = IMAGE_EXTENSIONS, recursive: bool = True) -> list[str]:
    """Image files under ``folder`` (by extension, case-insensitive), sorted, as strings.

    Parameters
    ----------
    folder : str or Path
    extensions : sequence of str, default IMAGE_EXTENSIONS
        Suffixes with the dot, e.g. ``".jpg"``.
    recursive : bool, default True
        Also look in sub-folders.

    Returns
    -------
    list of str

    Raises
    ------
    FileNotFoundError
        When ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    exts = {e.lower() for e in extensions}
    it = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(str(p) for p in it if p.is_file() and p.suffix.lower() in exts)


def read_image_list(csv_path, column: str | None = None, images_dir=None) -> list[str]:
    """Paths/URLs from a CSV: ``column``, else the first of ``path``, ``image_url``, ``url``, ``file``.

    Parameters
    ----------
    csv_path : str or Path
        The CSV.
    column : str, optional
        The column to read.
    images_dir : str or Path, optional
        Base of relative paths (default: the CSV's folder); URLs and absolute paths are kept.

    Returns
    -------
    list of str
        Duplicates keep their first occurrence.

    Raises
    ------
    ValueError
        When the column is missing, or a cell is empty (naming the line numbers).
    """
    csv_path = Path(csv_path)
    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    if column is None:
        column = next((c for c in ("path", "image_url", "url", "file") if c in df.columns), None)
        if column is None:
            raise ValueError(f"{csv_path}: no column named path, image_url, url or file (columns: {list(df.columns)}); "
                             "pass column=")
    elif column not in df.columns:
        raise ValueError(f"{csv_path}: no column {column!r} (columns: {list(df.columns)})")
    empty = np.flatnonzero(df[column].str.strip() == "")
    if len(empty):
        raise ValueError(f"{csv_path}: empty {column!r} in row(s) {list(empty[:10] + 2)} (line numbers, header = 1)")
    base = Path(images_dir) if images_dir is not None else csv_path.parent
    out = []
    for v in df[column].str.strip():
        out.append(v if v.startswith(("http://", "https://")) or Path(v).is_absolute() else str(base / v))
    return list(dict.fromkeys(out))


def _pixels(paths) -> np.ndarray:
    from PIL import Image
    out = np.zeros(len(paths), np.int64)
    for k, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                out[k] = im.width * im.height
        except Exception:  # noqa: BLE001 - unreadable here means "not the one to keep"
            out[k] = -1
    return out


def group_table(paths: Sequence[str], labels: np.ndarray, emb: np.ndarray, *, keep: str = "largest",
                include_singletons: bool = False) -> pd.DataFrame:
    """One row per image in a group of two or more: who is kept and how close each member is.

    Parameters
    ----------
    paths : N image paths; labels : (N,) int group labels (:func:`connected_groups`);
    emb : (N, D) L2-normalised embeddings.
    keep : which member represents (and is kept from) each group: ``"largest"`` (most
        pixels, then most bytes on disk, then path order — the best copy of a re-post),
        ``"medoid"`` (highest mean similarity to the others) or ``"first"`` (path order).

    Returns
    -------
    DataFrame ``group`` (int), ``size``, ``path``, ``representative`` (bool, one per group),
    ``similarity`` (cosine to the representative; 1.0 for it), ``min_similarity`` (the
    group's lowest value: a low one flags a loose transitive chain). Sorted by group, the
    representative first, then by decreasing similarity.
    """
    if keep not in ("largest", "medoid", "first"):
        raise ValueError(f"keep must be 'largest', 'medoid' or 'first', got {keep!r}")
    paths = list(paths)
    labels = np.asarray(labels)
    emb = np.asarray(emb, np.float32)
    if not (len(paths) == len(labels) == len(emb)):
        raise ValueError(f"paths ({len(paths)}), labels ({len(labels)}) and emb ({len(emb)}) differ in length")
    sizes = np.bincount(labels) if len(labels) else np.zeros(0, int)
    members = np.flatnonzero(sizes[labels] >= (1 if include_singletons else 2)) if len(labels) else np.zeros(0, int)
    pix = _pixels([paths[m] for m in members]) if keep == "largest" else None
    nbytes = np.array([Path(paths[m]).stat().st_size if Path(paths[m]).exists() else -1 for m in members]) \
        if keep == "largest" else None
    rows = []
    order = pd.Series(np.arange(len(members))).groupby(labels[members]).indices if len(members) else {}
    for g, loc in order.items():
        idx = members[loc]
        e = emb[idx]
        if keep == "largest":
            # max pixels, then bytes, then the earliest path
            best = min(range(len(idx)), key=lambda t: (-pix[loc[t]], -nbytes[loc[t]], idx[t]))
        elif keep == "medoid":
            best = int(np.argmax((e @ e.T).sum(1)))
        else:
            best = 0
        sim = e @ e[best]
        sim[best] = 1.0
        for t, m in enumerate(idx):
            rows.append((int(g), len(idx), paths[m], t == best, float(sim[t]), float(sim.min())))
    out = pd.DataFrame(rows, columns=["group", "size", "path", "representative", "similarity", "min_similarity"])
    out = out.astype({"group": np.int64, "size": np.int64, "representative": bool, "similarity": np.float64,
                      "min_similarity": np.float64})
    return (out.sort_values(["group", "representative", "similarity"], ascending=[True, False, False])
               .reset_index(drop=True))


def files_to_remove(groups: pd.DataFrame) -> pd.DataFrame:
    """The non-representative members of each group.

    Parameters
    ----------
    groups : DataFrame
        :func:`~nnutils.scale.grouping.group_table`'s output (``group``, ``path``,
        ``representative``, ``similarity``).

    Returns
    -------
    DataFrame
        Columns ``path``, ``keep`` (its group's representative), ``group`` and
        ``similarity`` (cosine to the representative, in [-1, 1]).
    """
    is_rep = groups.representative.astype(bool).to_numpy()
    rep = groups[is_rep].set_index("group").path
    out = groups[~is_rep]
    return pd.DataFrame({"path": out.path.to_numpy(), "keep": out.group.map(rep).to_numpy(),
                         "group": out.group.to_numpy(), "similarity": out.similarity.to_numpy()})


@dataclass
class DuplicateGroups:
    """What :func:`find_duplicates` found.

    Parameters
    ----------
    groups : DataFrame
        :func:`~nnutils.scale.grouping.group_table`: ``group``, ``size``, ``path``,
        ``representative``, ``similarity``, …
    to_remove : DataFrame
        :func:`files_to_remove`.
    edges : DataFrame
        ``i``, ``j``, ``similarity``, ``via_min2``: rows of ``paths``.
    labels : ndarray of int64, shape (N,)
        Group label per path; -1 for unreadable images.
    paths : list of str
        The N inputs, in order.
    unreadable : DataFrame
        ``path``, ``reason``.
    report : dict
        Counts, settings and timings (seconds).
    embeddings : ndarray of float32, shape (N, D), optional
        NaN rows where unreadable.
    ok : ndarray of bool, shape (N,), optional
        Which images were readable.
    """

    groups: pd.DataFrame            # group_table(): group, size, path, representative, similarity, ...
    to_remove: pd.DataFrame         # files_to_remove()
    edges: pd.DataFrame             # i, j, similarity, via_min2 — rows of `paths`
    labels: np.ndarray              # (N,) group label per path; -1 for unreadable images
    paths: list                     # the N inputs, in order
    unreadable: pd.DataFrame        # path, reason
    report: dict = field(default_factory=dict)
    embeddings: np.ndarray | None = field(default=None, repr=False)   # (N, D) float32, NaN rows unreadable
    ok: np.ndarray | None = field(default=None, repr=False)           # (N,) bool readable

    def save(self, out_dir) -> dict:
        """Write ``groups.csv``, ``to_remove.csv``, ``unreadable.csv`` and ``report.json``.

        Parameters
        ----------
        out_dir : str or Path
            Created if missing.

        Returns
        -------
        dict of str to Path
            ``groups``, ``to_remove``, ``unreadable`` and ``report`` → the files written.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = {"groups": out_dir / "groups.csv", "to_remove": out_dir / "to_remove.csv",
                 "unreadable": out_dir / "unreadable.csv", "report": out_dir / "report.json"}
        self.groups.to_csv(files["groups"], index=False)
        self.to_remove.to_csv(files["to_remove"], index=False)
        self.unreadable.to_csv(files["unreadable"], index=False)
        files["report"].write_text(json.dumps(self.report, indent=2))
        return files


def group_embeddings(emb: np.ndarray, threshold: float, *, k: int = 10, index: str = "auto", min2: bool = False,
                     min2_threshold: float | None = None, mutual: bool = False, star: bool = False,
                     progress: bool = False) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """kNN + edges + components on L2-normalised embeddings.

    ``k`` neighbours per item (itself included) bound the group an item can join directly;
    groups larger than ``k`` still form through transitivity.

    Parameters
    ----------
    emb : ndarray, shape (N, D)
        L2-normalised embeddings (cast to float32).
    threshold : float
        Cosine at or above which two neighbours are linked.
    k : int, default 10
        Neighbours per item, itself included.
    index : str, default "auto"
        ``"auto"``, ``"flat"``, ``"ivf"`` or ``"hnsw"`` (see :func:`nnutils.scale.index.build_index`).
    min2, min2_threshold, mutual
        Edge variants (:func:`~nnutils.scale.grouping.neighbour_edges`).
    star : bool, default False
        Groups that do not chain (:func:`~nnutils.scale.grouping.star_groups`) instead of
        connected components.
    progress : bool, default False
        Show progress bars.

    Returns
    -------
    labels : ndarray of int64, shape (N,)
        Group per item (0 = the largest group).
    edges : DataFrame
        ``i``, ``j``, ``similarity``, ``via_min2``.
    timings : dict
        ``index`` (kind built) and ``index_s``, ``search_s``, ``group_s`` in seconds.
    """
    t0 = time.perf_counter()
    emb = np.ascontiguousarray(emb, np.float32)
    idx = build_index(emb, kind=index, progress=progress)
    t1 = time.perf_counter()
    sims, ids = search(idx, emb, min(k, len(emb)), progress=progress)
    t2 = time.perf_counter()
    edges = neighbour_edges(sims, ids, threshold, min2=min2, min2_threshold=min2_threshold, mutual=mutual)
    labels = group_edges(len(emb), edges, star=star)
    t3 = time.perf_counter()
    return labels, edges, dict(index=index_kind(idx), index_s=round(t1 - t0, 3), search_s=round(t2 - t1, 3),
                               group_s=round(t3 - t2, 3))


def dedup_settings(model, *, threshold: float | None = None, k: int | None = None, min2: bool | None = None,
                   min2_threshold: float | None = None, mutual: bool | None = None,
                   star: bool | None = None) -> tuple[Decision, dict]:
    """The model and grouping settings a dedup runs with: what is given, else the run folder's.

    Settings left as None come from a run folder's ``grouping.json`` (notebook 09), else the
    pair threshold of its decision, ``k=10``, no min2 / mutual / star. Shared by
    :func:`find_duplicates` and :mod:`nnutils.scale.beam`, so both group alike.

    Parameters
    ----------
    model : a run folder, or a ``.keras`` / ``.tflite`` embedder (then ``threshold`` is required)
    threshold, k, min2, min2_threshold, mutual, star : as for :func:`find_duplicates`

    Returns
    -------
    decision : Decision
        The embedding model (a run folder's, or its best embedding model if 07 chose the hash)
        at the grouping threshold.
    options : dict
        ``k``, ``min2``, ``min2_threshold``, ``mutual`` and ``star``.

    Raises
    ------
    ValueError
        ``model`` is ``"phash"``, or a model file is given without a threshold.
    FileNotFoundError
        ``model`` is neither a run folder nor an existing file.
    """
    chosen = grouping_options(model) if Path(str(model)).is_dir() else {}
    threshold = chosen.get("threshold") if threshold is None else threshold
    opts = dict(k=chosen.get("k", 10) if k is None else k,
                min2=chosen.get("min2", False) if min2 is None else min2,
                mutual=chosen.get("mutual", False) if mutual is None else mutual,
                star=chosen.get("star", False) if star is None else star,
                min2_threshold=min2_threshold)
    if min2_threshold is None and chosen and threshold is not None:
        opts["min2_threshold"] = threshold - chosen["min2_margin"]
    if str(model) == "phash":
        raise ValueError("grouping needs an embedding model, not phash (give a .keras model and --threshold)")
    if Path(str(model)).is_dir():  # a run folder: 07's model, or its best embedding model if 07 chose phash
        decision = Decision.load(model).for_embeddings()
        decision = decision if threshold is None else decision.at_threshold(threshold)
    else:
        decision = Decision.for_model(model, threshold)
    return decision, opts


def find_duplicates(images, model, *, threshold: float | None = None, k: int | None = None, index: str = "auto",
                    min2: bool | None = None, min2_threshold: float | None = None, mutual: bool | None = None,
                    star: bool | None = None, keep: str = "largest", runtime: str = "tflite", cache_dir=None,
                    batch_size: int = 32, progress: bool = True, verify=None) -> DuplicateGroups:
    """Group the duplicates among ``images``: a folder, a CSV of paths/URLs, or a list of paths.

    From a run folder, settings left as None come from its ``grouping.json`` (written by
    notebook 09: threshold, variant, k chosen on labelled data), else the pair threshold of
    ``decision.json``, ``k=10``, no min2/mutual. Grouping usually needs a *higher* threshold
    than pairs: components are transitive, so every false edge merges two whole groups. Each
    image is decoded and embedded once; embeddings are cached by content under
    ``cache_dir``. See the module docstring.

    Parameters
    ----------
    images : str or Path or sequence of str
        A folder (:func:`list_images`), a CSV (:func:`read_image_list`) or paths/URLs.
    model : str or Path
        A run folder or a ``.keras`` / ``.tflite`` embedder (then ``threshold`` is
        required), as for ``nnutils.predict``.
    threshold : float, optional
        Cosine in [-1, 1] at or above which neighbours are linked.
    k : int, optional
        Neighbours per image, itself included.
    index : str, default "auto"
        Index kind (:func:`nnutils.scale.index.build_index`).
    min2 : bool, optional
        Keep each image's nearest neighbour down to ``min2_threshold``.
    min2_threshold : float, optional
        Default ``threshold - min2_margin`` from ``grouping.json``.
    mutual : bool, optional
        Keep only mutual neighbours.
    star : bool, optional
        Groups that do not chain (:func:`~nnutils.scale.grouping.star_groups`); default the
        run's ``grouping.json`` variant, else False.
    keep : str, default "largest"
        How each group's representative is chosen (:func:`~nnutils.scale.grouping.group_table`).
    runtime : {"tflite", "keras"}, default "tflite"
    cache_dir : str or Path, optional
        Embedding and download cache.
    batch_size : int, default 32
        Images per inference batch.
    progress : bool, default True
        Show progress bars.

    verify : None, "off", "auto", "on" or path, default None
        The run's local verification and fused decision (notebook 10) applied to every link
        before grouping, as ``nnutils.predict`` applies it to pairs
        (:func:`nnutils.decide.predict.resolve_verification`): a link the decision rejects
        (another view of a scene, another crop of one photo) is dropped, so it cannot merge
        two groups. None/"off": links by the threshold alone.

    Returns
    -------
    DuplicateGroups

    Raises
    ------
    ValueError
        When no image is found, ``model`` is ``"phash"``, or a model file is given without a
        threshold.
    FileNotFoundError
        When ``model`` is neither a run folder nor an existing file.
    """
    t0 = time.perf_counter()
    if isinstance(images, (str, Path)) and Path(images).is_dir():
        paths = list_images(images)
    elif isinstance(images, (str, Path)):
        paths = read_image_list(images)
    else:
        paths = [str(p) for p in images]
    if not paths:
        raise ValueError(f"no images found in {images}")
    decision, opts = dedup_settings(model, threshold=threshold, k=k, min2=min2, min2_threshold=min2_threshold,
                                    mutual=mutual, star=star)
    k, min2, min2_threshold, mutual, star = (opts[n] for n in ("k", "min2", "min2_threshold", "mutual", "star"))
    # the run's pair decision checks the links, at its own threshold (the grouping threshold is another)
    pair_decision = Decision.load(model).for_embeddings() if Path(str(model)).is_dir() else decision
    check = resolve_verification(pair_decision, verify, model)
    model_path, threshold, name = decision.model_path, decision.threshold, decision.model
    embedder = decision.embedder(runtime=runtime, cache_dir=cache_dir)
    local = resolve_images(paths, None, cache_dir=(Path(cache_dir) / "downloads") if cache_dir else None,
                           progress=progress)
    files = [local[p] for p in paths]
    t_embed = time.perf_counter()
    emb, ok, embedded = embed_cached(embedder, model_path, runtime, files, cache_dir, batch_size, progress)
    embed_s = time.perf_counter() - t_embed
    good = np.flatnonzero(ok)
    labels = np.full(len(paths), -1, np.int64)
    sub_labels, sub_edges, timing = group_embeddings(emb[good], threshold, k=k, index=index, min2=min2,
                                                     min2_threshold=min2_threshold, mutual=mutual, star=star,
                                                     progress=progress)
    vreport = {}
    if check.verifies and len(sub_edges):   # the fused decision on every link: a rejected one merges nothing
        gfiles = [files[g] for g in good]
        ii, jj = sub_edges.i.to_numpy(), sub_edges.j.to_numpy()
        # a link's score is the grouping's cosine, rescored by the model the verification was fitted on (int8);
        # the pair decision's own threshold and range apply to it
        f1, f2 = [gfiles[i] for i in ii], [gfiles[j] for j in jj]
        scores = check.fusion_scores(sub_edges.similarity.to_numpy(), f1, f2, cache_dir=cache_dir,
                                     batch_size=batch_size)
        keep_link, vrep = check.decide(scores, f1, f2, progress=progress)
        keep_link = np.asarray(keep_link).astype(bool)
        vreport = dict(links=int(len(sub_edges)), links_rejected=int((~keep_link).sum()),
                       links_verified=int(vrep.get("pairs_verified", 0)), verify_s=vrep.get("verify_s"),
                       verified_with=check.local_method)
        sub_edges = sub_edges[keep_link].reset_index(drop=True)
        sub_labels = group_edges(len(good), sub_edges, star=bool(star))
    labels[good] = sub_labels
    edges = sub_edges.assign(i=good[sub_edges.i.to_numpy()], j=good[sub_edges.j.to_numpy()]) if len(good) else sub_edges
    groups = group_table([paths[g] for g in good], sub_labels, emb[good], keep=keep)
    to_remove = files_to_remove(groups)
    bad = [(paths[i], "download failed" if files[i] is None else (inspect_image(files[i]).reason or "unreadable"))
           for i in np.flatnonzero(~ok)]
    unreadable = pd.DataFrame(bad, columns=["path", "reason"])
    report = dict(images=len(paths), embedded_now=int(embedded), unreadable=len(bad),
                  groups=int(groups.group.nunique()) if len(groups) else 0, images_in_groups=len(groups),
                  files_to_remove=len(to_remove), model=name, threshold=float(threshold), k=k, min2=min2,
                  mutual=mutual, star=bool(star), keep=keep, embed_s=round(embed_s, 2), **timing,
                  verification=vreport or None,
                  seconds=round(time.perf_counter() - t0, 2))
    return DuplicateGroups(groups, to_remove, edges, labels, paths, unreadable, report, emb, ok)
