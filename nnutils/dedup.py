"""Find the groups of duplicates in a whole collection, without an N×N matrix.

    python -m nnutils.dedup --images photos/ --model runs/cpu --out runs/cpu/dedup
    python -m nnutils.dedup --csv listing.csv --model runs/cpu --threshold 0.6 --min2 --out dedup/

The steps, each a function here:

1. :func:`list_images` / :func:`read_image_list` — a folder (recursive) or a CSV of paths/URLs.
2. embed every image once (batched, cached on disk by content, progress bar): the same
   embedder and cache as ``nnutils.predict``.
3. :func:`nnutils.index.knn` — a faiss index (exact below a size, approximate above) and the
   ``k`` nearest neighbours of every image: memory O(N·k), not O(N²).
4. :func:`neighbour_edges` — keep neighbour pairs at or above the threshold, with the Kaggle
   Shopee refinements as options: ``min2`` (every image keeps its nearest neighbour when it
   is at least ``min2_threshold`` similar, so a duplicate just under the threshold still
   finds its pair) and ``mutual`` (keep i–j only when each is among the other's ``k``
   neighbours, which removes "hub" images that are everyone's neighbour).
5. :func:`connected_groups` — groups are the connected components of the kept edges
   (transitive: a~b and b~c put a, b, c in one group even when a and c are not similar;
   :func:`group_table` reports each member's similarity to its group's representative, so
   a loose chain shows up as a low value).
6. :func:`group_table` and :func:`files_to_remove` — a CSV of groups (group id, path,
   similarity to the representative) and the list of files to remove, keeping one per
   group (by default the largest image: the best copy of a re-posted photo).

Unreadable images are never grouped; they are listed in the result's ``unreadable`` table
with the reason (the same policy as the pairs task). :func:`rowwise_f1` is the Kaggle Shopee
metric for grouping quality (mean over images of the F1 between the predicted and the true
group).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["IMAGE_EXTENSIONS", "list_images", "read_image_list", "neighbour_edges", "connected_groups",
           "group_table", "files_to_remove", "rowwise_f1", "group_embeddings", "DuplicateGroups",
           "sweep_grouping", "save_grouping", "read_grouping", "grouping_options", "true_groups", "find_duplicates", "main"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


# ----------------------------------------------------------------------------- inputs
def list_images(folder, extensions: Sequence[str] = IMAGE_EXTENSIONS, recursive: bool = True) -> list[str]:
    """Image files under ``folder`` (by extension, case-insensitive), sorted, as strings."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    exts = {e.lower() for e in extensions}
    it = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(str(p) for p in it if p.is_file() and p.suffix.lower() in exts)


def read_image_list(csv_path, column: str | None = None, images_dir=None) -> list[str]:
    """Paths/URLs from a CSV: ``column``, else the first of ``path``, ``image_url``, ``url``, ``file``.

    Relative paths are resolved against ``images_dir`` (default: the CSV's folder). Empty
    cells raise ``ValueError`` naming the rows; duplicates keep their first occurrence.
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


# ----------------------------------------------------------------------------- grouping logic
def _check_knn(sims, ids):
    sims, ids = np.asarray(sims, np.float32), np.asarray(ids, np.int64)
    if sims.ndim != 2 or sims.shape != ids.shape:
        raise ValueError(f"sims and ids must be 2-d arrays of one shape (N, k), got {sims.shape} and {ids.shape}")
    if ids.size and ids.max() >= len(ids):
        raise ValueError(f"ids refer to row {ids.max()} but there are only {len(ids)} rows (a self-kNN is expected)")
    return sims, ids


def neighbour_edges(sims, ids, threshold: float, *, min2: bool = False, min2_threshold: float | None = None,
                    mutual: bool = False) -> pd.DataFrame:
    """Duplicate links from a self-kNN: pairs ``i < j`` with their similarity.

    Parameters
    ----------
    sims, ids : (N, k) float32 similarities (descending per row) and int64 neighbour rows of
        each of the N items against the same N items (self-matches and ``-1`` ids are ignored).
    threshold : keep a neighbour when its similarity is ``>= threshold``.
    min2 : also keep each item's nearest other neighbour when its similarity is
        ``>= min2_threshold`` (default: ``threshold - 0.05``) — the Shopee "at least two per
        group" trick for duplicates just under the threshold.
    mutual : keep an edge only if each item is in the other's kept neighbour list
        (applied before ``min2``; the nearest-neighbour link of ``min2`` is kept regardless).

    Returns
    -------
    DataFrame with int columns ``i``, ``j`` (i < j), float ``similarity`` (the larger of the
    two directions), and bool ``via_min2``; one row per undirected edge, sorted by (i, j).
    """
    sims, ids = _check_knn(sims, ids)
    n, k = ids.shape
    rows = np.repeat(np.arange(n), k)
    cols, s = ids.ravel(), sims.ravel()
    valid = (cols >= 0) & (cols != rows) & np.isfinite(s)
    rows, cols, s = rows[valid], cols[valid], s[valid]
    keep = s >= threshold
    main = pd.DataFrame({"a": rows[keep], "b": cols[keep], "similarity": s[keep]})
    if mutual and len(main):
        fwd = set(zip(main.a.to_numpy().tolist(), main.b.to_numpy().tolist()))
        back = [(b, a) in fwd for a, b in zip(main.a.to_numpy().tolist(), main.b.to_numpy().tolist())]
        main = main[np.array(back, bool)]
    main = main.assign(via_min2=False)
    parts = [main]
    if min2:
        t2 = threshold - 0.05 if min2_threshold is None else float(min2_threshold)
        first = pd.DataFrame({"a": rows, "b": cols, "similarity": s}).drop_duplicates("a")  # nearest per row
        first = first[first.similarity >= t2].assign(via_min2=True)
        parts.append(first)
    e = pd.concat(parts, ignore_index=True)
    e["i"], e["j"] = np.minimum(e.a, e.b), np.maximum(e.a, e.b)
    # one row per undirected edge; an edge found by the plain rule is not "via_min2"
    e = (e.sort_values(["i", "j", "via_min2", "similarity"], ascending=[True, True, True, False])
          .groupby(["i", "j"], as_index=False).agg(similarity=("similarity", "max"), via_min2=("via_min2", "min")))
    return e[["i", "j", "similarity", "via_min2"]].astype({"i": np.int64, "j": np.int64, "similarity": np.float32})


def connected_groups(n: int, edges: pd.DataFrame) -> np.ndarray:
    """Group label per item: (n,) int64, the connected components of ``edges`` (columns ``i``, ``j``).

    Labels are 0..G-1, numbered by decreasing group size then by first member, so label 0 is
    the largest group. Items without an edge are groups of one.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    if n == 0:
        return np.zeros(0, np.int64)
    i = edges["i"].to_numpy(np.int64) if len(edges) else np.zeros(0, np.int64)
    j = edges["j"].to_numpy(np.int64) if len(edges) else np.zeros(0, np.int64)
    if len(i) and (i.min() < 0 or max(i.max(), j.max()) >= n):
        raise ValueError(f"edges refer to items outside 0..{n - 1}")
    g = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    _, lab = connected_components(g, directed=False)
    sizes = np.bincount(lab)
    first = np.full(len(sizes), n)
    np.minimum.at(first, lab, np.arange(n))
    order = np.lexsort((first, -sizes))           # largest first, ties by first member
    relabel = np.empty_like(order)
    relabel[order] = np.arange(len(order))
    return relabel[lab].astype(np.int64)


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
    """The non-representative members of each group: ``path``, ``keep`` (its representative), ``group``, ``similarity``."""
    is_rep = groups.representative.astype(bool).to_numpy()
    rep = groups[is_rep].set_index("group").path
    out = groups[~is_rep]
    return pd.DataFrame({"path": out.path.to_numpy(), "keep": out.group.map(rep).to_numpy(),
                         "group": out.group.to_numpy(), "similarity": out.similarity.to_numpy()})


def rowwise_f1(pred_labels, true_labels) -> float:
    """Kaggle Shopee metric: mean over items of F1(predicted group, true group), each containing the item.

    For item i with predicted set P_i and true set T_i (both include i),
    F1_i = 2·|P_i ∩ T_i| / (|P_i| + |T_i|). Singletons predicted as singletons score 1.
    ``pred_labels``, ``true_labels``: (N,) group labels of any hashable dtype.
    """
    p = pd.Series(pd.factorize(pd.Series(pred_labels))[0])
    t = pd.Series(pd.factorize(pd.Series(true_labels))[0])
    if len(p) != len(t):
        raise ValueError(f"pred_labels ({len(p)}) and true_labels ({len(t)}) differ in length")
    if len(p) == 0:
        return float("nan")
    ps, ts = p.map(p.value_counts()), t.map(t.value_counts())
    both = pd.Series(list(zip(p, t)))
    inter = both.map(both.value_counts())
    return float((2 * inter / (ps + ts)).mean())


def sweep_grouping(sims, ids, truth, thresholds: Sequence[float], *, min2_margin: float = 0.05,
                   variants: Sequence[str] = ("plain", "min2", "mutual", "mutual+min2")) -> pd.DataFrame:
    """Row-wise F1 of the groups for every threshold × variant, from one self-kNN.

    ``sims``, ``ids``: (N, k) self-kNN; ``truth``: (N,) true group labels. Variants:
    ``plain``, ``min2`` (nearest neighbour kept down to ``threshold - min2_margin``),
    ``mutual`` and ``mutual+min2``. Returns a DataFrame ``threshold``, ``variant``,
    ``rowwise_f1``, ``groups`` (of two or more), ``largest`` (size of the largest group), ``edges``.
    """
    rows = []
    for t in thresholds:
        for v in variants:
            if v not in ("plain", "min2", "mutual", "mutual+min2"):
                raise ValueError(f"unknown variant {v!r}")
            e = neighbour_edges(sims, ids, t, min2="min2" in v, min2_threshold=t - min2_margin,
                                mutual="mutual" in v)
            lab = connected_groups(len(ids), e)
            size = np.bincount(lab)
            rows.append(dict(threshold=float(t), variant=v, rowwise_f1=rowwise_f1(lab, truth),
                             groups=int((size >= 2).sum()), largest=int(size.max()) if len(size) else 0,
                             edges=len(e)))
    return pd.DataFrame(rows)


def true_groups(data_dir, paths: Sequence[str]) -> np.ndarray | None:
    """The embedded dataset's ground truth: the ``base_id`` (one photograph) of each path, by file name.

    Returns an object array (N,), or None when ``<data_dir>/images.csv`` has no ``base_id``
    (real data). Files the table does not know are their own group.
    """
    table = Path(data_dir) / "images.csv"
    if not table.is_file():
        return None
    im = pd.read_csv(table, keep_default_na=False)
    if "base_id" not in im or "file" not in im:
        return None
    base = im.set_index("file").base_id
    return np.array([base.get(Path(p).name, str(p)) for p in paths], dtype=object)


# ----------------------------------------------------------------------------- end to end
@dataclass
class DuplicateGroups:
    """What :func:`find_duplicates` found."""

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
        """Write ``groups.csv``, ``to_remove.csv``, ``unreadable.csv`` and ``report.json``; returns their paths."""
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
                     min2_threshold: float | None = None, mutual: bool = False,
                     progress: bool = False) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """kNN + edges + components on (N, D) L2-normalised embeddings → (labels (N,), edges, timings).

    ``k`` neighbours per item (itself included) bound the group an item can join directly;
    groups larger than ``k`` still form through transitivity. ``index``: ``"auto"``,
    ``"flat"``, ``"ivf"`` or ``"hnsw"`` (see :func:`nnutils.index.build_index`).
    """
    from .index import build_index, index_kind, search
    t0 = time.perf_counter()
    emb = np.ascontiguousarray(emb, np.float32)
    idx = build_index(emb, kind=index, progress=progress)
    t1 = time.perf_counter()
    sims, ids = search(idx, emb, min(k, len(emb)), progress=progress)
    t2 = time.perf_counter()
    edges = neighbour_edges(sims, ids, threshold, min2=min2, min2_threshold=min2_threshold, mutual=mutual)
    labels = connected_groups(len(emb), edges)
    t3 = time.perf_counter()
    return labels, edges, dict(index=index_kind(idx), index_s=round(t1 - t0, 3), search_s=round(t2 - t1, 3),
                               group_s=round(t3 - t2, 3))


def save_grouping(run_dir, *, threshold: float, variant: str, k: int, min2_margin: float = 0.05, **extra) -> Path:
    """Record the grouping settings chosen on labelled data in ``<run_dir>/grouping.json``.

    ``variant`` is one of :func:`sweep_grouping`'s; :func:`find_duplicates` given this run
    folder uses these settings unless told otherwise.
    """
    if variant not in ("plain", "min2", "mutual", "mutual+min2"):
        raise ValueError(f"unknown variant {variant!r}")
    path = Path(run_dir) / "grouping.json"
    path.write_text(json.dumps(dict(threshold=float(threshold), variant=variant, k=int(k),
                                    min2_margin=float(min2_margin), **extra), indent=2))
    return path


def read_grouping(run_dir) -> dict | None:
    """The settings :func:`save_grouping` wrote, or None."""
    path = Path(run_dir) / "grouping.json"
    return json.loads(path.read_text()) if path.is_file() else None


def grouping_options(run_dir) -> dict:
    """:func:`find_duplicates` keyword arguments from ``<run_dir>/grouping.json`` (``{}`` if absent):
    ``threshold``, ``k``, ``min2``, ``mutual``, ``min2_margin``."""
    g = read_grouping(run_dir)
    if not g:
        return {}
    return dict(threshold=g["threshold"], k=g["k"], min2="min2" in g["variant"], mutual="mutual" in g["variant"],
                min2_margin=g.get("min2_margin", 0.05))


def find_duplicates(images, model, *, threshold: float | None = None, k: int | None = None, index: str = "auto",
                    min2: bool | None = None, min2_threshold: float | None = None, mutual: bool | None = None,
                    keep: str = "largest", runtime: str = "tflite", cache_dir=None, batch_size: int = 32,
                    progress: bool = True) -> DuplicateGroups:
    """Group the duplicates among ``images``: a folder, a CSV of paths/URLs, or a list of paths.

    ``model`` is a run folder or a ``.keras`` / ``.tflite`` embedder (then ``threshold`` is
    required), as for ``nnutils.predict``. From a run folder, settings left as None come
    from its ``grouping.json`` (written by notebook 09: threshold, variant, k chosen on
    labelled data), else the pair threshold of ``decision.json``, ``k=10``, no min2/mutual.
    Grouping usually needs a *higher* threshold than pairs: components are transitive, so
    every false edge merges two whole groups. Each image is decoded and embedded once;
    embeddings are cached by content under ``cache_dir``. See the module docstring.
    """
    from .inference import load_embedder
    from .predict import _resolve_model, embed_cached
    t0 = time.perf_counter()
    if isinstance(images, (str, Path)) and Path(images).is_dir():
        paths = list_images(images)
    elif isinstance(images, (str, Path)):
        paths = read_image_list(images)
    else:
        paths = [str(p) for p in images]
    if not paths:
        raise ValueError(f"no images found in {images}")
    chosen = grouping_options(model) if Path(str(model)).is_dir() else {}
    threshold = chosen.get("threshold") if threshold is None else threshold
    k = chosen.get("k", 10) if k is None else k
    min2 = chosen.get("min2", False) if min2 is None else min2
    mutual = chosen.get("mutual", False) if mutual is None else mutual
    if min2_threshold is None and chosen and threshold is not None:
        min2_threshold = threshold - chosen["min2_margin"]
    if Path(str(model)).is_dir():  # a run folder: 07's model, or its best embedding model if 07 chose phash
        from .evaluation import embedding_decision
        d = embedding_decision(model)
        model_path, name = Path(d["model_path"]), d["model"]
        threshold = d["threshold"] if threshold is None else threshold
    else:
        model_path, threshold, name = _resolve_model(model, threshold)
    if model_path == "phash":
        raise ValueError("grouping needs an embedding model, not phash (give a .keras model and --threshold)")
    embedder = load_embedder(model_path, runtime=runtime, cache_dir=cache_dir)
    from .pairs import resolve_images
    local = resolve_images(paths, None, cache_dir=(Path(cache_dir) / "downloads") if cache_dir else None,
                           progress=progress)
    files = [local[p] for p in paths]
    t_embed = time.perf_counter()
    emb, ok, embedded = embed_cached(embedder, model_path, runtime, files, cache_dir, batch_size, progress)
    embed_s = time.perf_counter() - t_embed
    good = np.flatnonzero(ok)
    labels = np.full(len(paths), -1, np.int64)
    sub_labels, sub_edges, timing = group_embeddings(emb[good], threshold, k=k, index=index, min2=min2,
                                                     min2_threshold=min2_threshold, mutual=mutual, progress=progress)
    labels[good] = sub_labels
    edges = sub_edges.assign(i=good[sub_edges.i.to_numpy()], j=good[sub_edges.j.to_numpy()]) if len(good) else sub_edges
    groups = group_table([paths[g] for g in good], sub_labels, emb[good], keep=keep)
    to_remove = files_to_remove(groups)
    from .images import inspect_image
    bad = [(paths[i], "download failed" if files[i] is None else (inspect_image(files[i]).reason or "unreadable"))
           for i in np.flatnonzero(~ok)]
    unreadable = pd.DataFrame(bad, columns=["path", "reason"])
    report = dict(images=len(paths), embedded_now=int(embedded), unreadable=len(bad),
                  groups=int(groups.group.nunique()) if len(groups) else 0, images_in_groups=len(groups),
                  files_to_remove=len(to_remove), model=name, threshold=float(threshold), k=k, min2=min2,
                  mutual=mutual, keep=keep, embed_s=round(embed_s, 2), **timing,
                  seconds=round(time.perf_counter() - t0, 2))
    return DuplicateGroups(groups, to_remove, edges, labels, paths, unreadable, report, emb, ok)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nnutils.dedup", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="a folder of images (searched recursively)")
    src.add_argument("--csv", help="a CSV with a path/image_url/url/file column")
    ap.add_argument("--model", required=True, help="run folder with decision.json, or a .keras/.tflite embedder")
    ap.add_argument("--threshold", type=float, default=None, help="cosine threshold (default: the run's)")
    ap.add_argument("--k", type=int, default=None, help="neighbours per image (default: the run's, else 10)")
    ap.add_argument("--index", default="auto", choices=["auto", "flat", "ivf", "hnsw"])
    ap.add_argument("--min2", action=argparse.BooleanOptionalAction, default=None,
                    help="keep each image's nearest neighbour if close enough (default: the run's choice)")
    ap.add_argument("--min2-threshold", type=float, default=None)
    ap.add_argument("--mutual", action=argparse.BooleanOptionalAction, default=None,
                    help="keep only mutual neighbours (default: the run's choice)")
    ap.add_argument("--keep", default="largest", choices=["largest", "medoid", "first"])
    ap.add_argument("--runtime", default="tflite", choices=["tflite", "keras"])
    ap.add_argument("--cache", default=None, help="embedding cache folder (default: <out>/cache)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", required=True, help="output folder: groups.csv, to_remove.csv, unreadable.csv, report.json")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    try:
        res = find_duplicates(a.images or a.csv, a.model, threshold=a.threshold, k=a.k, index=a.index, min2=a.min2,
                              min2_threshold=a.min2_threshold, mutual=a.mutual, keep=a.keep, runtime=a.runtime,
                              cache_dir=a.cache or Path(a.out) / "cache", batch_size=a.batch_size,
                              progress=not a.quiet)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files = res.save(a.out)
    r = res.report
    print(f"{r['images']} images: {r['groups']} groups holding {r['images_in_groups']} images; "
          f"{r['files_to_remove']} files to remove; {r['unreadable']} unreadable ({r['seconds']} s)")
    for k_, p in files.items():
        print(f"  {k_}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
