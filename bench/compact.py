"""Compact descriptors: what each way of storing fewer bytes per photo costs in pair quality.

    python bench/compact.py                       # runs/cpu on data/lun-embedded and data/lun-shift
    python bench/compact.py --out compact.csv     # also write the table as CSV
    python bench/compact.py --run-dir runs/smoke --data-dir data/lun-embedded-smoke \\
        --shift-dir data/lun-shift-smoke --no-grouping

Issue 13 §2: 10M photos must fit in 24 GiB, and the default model (07's choice) may emit
5,120-d float32 vectors (20 KiB each, 191 GiB for 10M). Each row is one way of storing the
vectors of one model, each judged on two evaluation sets: the embedded test split
(``--data-dir``: its ``test.csv`` / ``test_labels.csv``) and the shifted benchmark
(``--shift-dir``: held-out photos, albumentations re-posts; ``python -m nnutils.shift``).

The options (rows), for the run's default model (``decision.json``; the best embedding model
of 07's sweep when 07 chose pHash), then the untrained pretrained backbone
(``00_pretrained``, the 5,120-d grid features) and 06's trained 512-d head when they differ
from the default:

- ``float32``: the model's unit vectors as they are (4·D bytes);
- ``PCA-whiten 256`` / ``128``: ``sklearn.decomposition.PCA(n, whiten=True)``, then L2
  normalisation (4·n bytes as float32);
- ``SQ8``: faiss ``ScalarQuantizer`` 8-bit codes (one byte per dimension, per-dimension range);
- ``PQ64`` / ``PQ32``: faiss ``ProductQuantizer`` with m = 64 / 32 sub-quantisers of 8 bits
  (m bytes; 256 centroids each).

Every reduction and quantiser is **fitted on the embeddings of the training images only**
(the images of notebook 02's training pairs, ``pairs_train.csv``); validation, test and
shifted images are only transformed. Scores of SQ8 / PQ are the cosines of the decoded
(reconstructed) vectors. The PQ codebooks have 256 centroids per sub-quantiser, so with the
cpu run's 1,631 train images faiss warns that it would like ≥ 9,984 training points: that
shortage is part of what the row measures (a real 10M collection trains PQ on far more).

Embeddings come from the suite's embedder (:func:`nnutils.models.embedders.load_embedder`,
TFLite runtime by default) through its content cache (:func:`~nnutils.models.embedders.embed_cached`,
under ``--cache-dir``), so a rerun embeds nothing; the TFLite conversions also go there,
never into the run folder.

Columns:

- ``model``, ``option``, ``dims``: the model, the storage option, the stored dimension;
- ``bytes/vector``: what one stored vector costs (float32: 4·dims; SQ8: dims; PQ: m);
- ``10M GiB``: ``bytes/vector`` × 10⁷ / 2³⁰, the vectors' codes alone (an IVF index adds 8
  bytes of id per vector and its centroids);
- ``val F1``, ``threshold``: the class-1 F1 on the validation pairs (``pairs_val.csv``) at the
  threshold that maximises it (:func:`nnutils.decide.metrics.best_threshold`), chosen for
  this option on its own scores (pairs with an unreadable image left out);
- ``test AUC`` / ``test F1`` and ``shift AUC`` / ``shift F1``: ROC AUC of the pair score and
  class-1 F1 at that validation threshold, on the embedded test split and on the shifted
  set (unreadable pairs score -1: predicted "not the same", the documented policy);
- ``test group F1`` / ``shift group F1`` (unless ``--no-grouping``): row-wise F1 (the Shopee
  metric) of the groups of the test images / of the shifted images, with the grouping
  threshold and variant chosen for this option on the validation images
  (:func:`nnutils.scale.grouping.choose_grouping`, ``k`` from the run's ``grouping.json``
  or 20, thresholds 0.20–0.98, every variant; ``grouping`` names the choice); each set's
  readable images are one collection, the truth is each image's photograph (``base_id``).

Prints one markdown table (and writes it with ``--out``); no asserts.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from nnutils.data import pairs as P  # noqa: E402
from nnutils.data.tables import true_groups  # noqa: E402
from nnutils.decide.decision import Decision  # noqa: E402
from nnutils.decide.metrics import best_threshold, pair_metrics  # noqa: E402
from nnutils.models.embedders import embed_cached, load_embedder, score_pairs  # noqa: E402
from nnutils.models.saving import list_models  # noqa: E402
from nnutils.profiles import Params  # noqa: E402
from nnutils.scale import grouping as G  # noqa: E402
from nnutils.train.runs import load_run_data  # noqa: E402

PRETRAINED, HEAD = "00_pretrained", "06_hard_negatives"
GROUP_THRESHOLDS = np.round(np.arange(0.20, 0.981, 0.02), 2)


# ----------------------------------------------------------------------------- the options
def _unit(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float32)
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def fit_option(option: str, train: np.ndarray):
    """Fit one storage option on the training images' embeddings.

    Parameters
    ----------
    option : str
        ``float32``, ``PCA-whiten <n>``, ``SQ8`` or ``PQ<m>``.
    train : ndarray of float32, shape (T, D)
        Unit embeddings of the training images (readable ones only).

    Returns
    -------
    transform : callable
        (N, D) unit embeddings → (N, dims) unit vectors whose dot products are the scores.
    dims : int
        The stored dimension.
    nbytes : int
        Bytes one stored vector takes.
    """
    import faiss
    d = train.shape[1]
    if option == "float32":
        return (lambda x: x), d, 4 * d
    if option.startswith("PCA-whiten"):
        from sklearn.decomposition import PCA
        n = int(option.split()[-1])
        if n > min(train.shape):
            raise ValueError(f"{option}: {len(train)} train vectors of dimension {d} cannot give {n} components")
        pca = PCA(n_components=n, whiten=True, random_state=0).fit(train)
        return (lambda x: _unit(pca.transform(x))), n, 4 * n
    x_train = np.ascontiguousarray(train, np.float32)
    if option == "SQ8":
        q = faiss.ScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit)
        q.train(x_train)
        nbytes = q.code_size
    elif option.startswith("PQ"):
        m = int(option[2:])
        if d % m:
            raise ValueError(f"{option}: m = {m} does not divide D = {d}")
        q = faiss.ProductQuantizer(d, m, 8)
        q.cp.seed = 0
        q.train(x_train)
        nbytes = q.code_size
    else:
        raise ValueError(f"unknown option {option!r}")
    return (lambda x: _unit(q.decode(q.compute_codes(np.ascontiguousarray(x, np.float32))))), d, int(nbytes)


def options_for(name: str, default: str) -> list[str]:
    """The storage options measured for model ``name`` (``default``: 07's model)."""
    if name == default:
        return ["float32", "PCA-whiten 256", "PCA-whiten 128", "SQ8", "PQ64", "PQ32"]
    if name == PRETRAINED:
        return ["float32", "PCA-whiten 256", "PCA-whiten 128"]
    return ["float32", "SQ8", "PQ64", "PQ32"]


# ----------------------------------------------------------------------------- the sets
def pair_set(data_dir: Path) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """``test.csv`` of a dataset folder, its labels (0/1) and URL → file."""
    test = P.read_pairs(data_dir / "test.csv", "test")
    labels = P.read_pairs(data_dir / "test_labels.csv", "labels")
    y = labels.set_index("ID").is_same.reindex(test.ID).to_numpy().astype(int)
    path_of = P.resolve_images(P.unique_urls(test), data_dir / "images", progress=False).to_dict()
    return test, y, path_of


def scores_of(z: np.ndarray, ok: np.ndarray, row: dict, pairs: pd.DataFrame, path_of: dict) -> np.ndarray:
    """Pair scores (NaN where an image is unreadable) from rows ``z`` indexed by file path."""
    i1 = [row[path_of[u]] for u in pairs.image_url1]
    i2 = [row[path_of[u]] for u in pairs.image_url2]
    return score_pairs(z, ok, i1, i2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "cpu"))
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "lun-embedded"))
    ap.add_argument("--shift-dir", default=str(ROOT / "data" / "lun-shift"),
                    help="the shifted benchmark (skipped when it has no test.csv)")
    ap.add_argument("--runtime", default="tflite", choices=["tflite", "keras"])
    ap.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "nnutils-compact"),
                    help="embedding cache and TFLite conversions (default $TMPDIR/nnutils-compact)")
    ap.add_argument("--no-grouping", action="store_true", help="skip the grouping row-wise F1 columns")
    ap.add_argument("--out", help="also write the table as CSV here")
    a = ap.parse_args(argv)
    run, data, shift = Path(a.run_dir), Path(a.data_dir), Path(a.shift_dir)
    cache = Path(a.cache_dir)
    t_start = time.perf_counter()

    models = list_models(run)
    default = Decision.load(run).model
    note = ""
    if default not in models:                 # 07 chose pHash: take the best embedding model of its sweep
        sweep = pd.read_csv(run / "metrics" / "07_threshold_sweep.csv")
        best = sweep[sweep.model.isin(list(models))].sort_values(["cv_f1", "roc_auc"], ascending=False)
        note = f" (07 chose {default}; the best embedding model of its sweep instead)"
        default = str(best.model.iloc[0])
    names = [default] + [n for n in (PRETRAINED, HEAD) if n in models and n != default]

    rd = load_run_data(Params(run_dir=run, data_dir=data, images_dir=data / "images"))
    train_paths = [rd.path_of.get(u) for u in rd.train_urls]
    val = rd.val
    val_y = val.is_same.to_numpy().astype(int)
    sets = {"test": pair_set(data)}
    if (shift / "test.csv").is_file():
        sets["shift"] = pair_set(shift)
    else:
        print(f"no shifted set at {shift} (no test.csv): its columns are left empty")
    # every image once: train (fit), validation (thresholds), the evaluation sets; an image that
    # could not be resolved (None) is one row that is never readable
    maps = [rd.path_of] + [po for _, _, po in sets.values()]
    all_paths = list(dict.fromkeys(train_paths + [p for po in maps for p in po.values()]))
    row = {p: i for i, p in enumerate(all_paths)}

    # grouping: chosen on the validation images, judged on each set's images (each its own collection)
    k = int((G.read_grouping(run) or {}).get("k", 20))
    images_of = lambda pairs, po: [p for p in dict.fromkeys(  # noqa: E731
        po[u] for u in pd.concat([pairs.image_url1, pairs.image_url2])) if p]
    val_imgs = images_of(val, rd.path_of)
    truth_val = true_groups(data, val_imgs)
    group_sets = {}
    for name, (pairs, _, po) in sets.items():
        imgs = images_of(pairs, po)
        truth = true_groups(data if name == "test" else shift, imgs)
        if truth is not None:
            group_sets[name] = (np.array([row[p] for p in imgs]), truth)
    if truth_val is None or not group_sets:
        print("no images.csv with base_id: no grouping F1")
        group_sets = {}

    results = []
    for name in names:
        model_path = models[name]
        print(f"{name}: embedding {len(all_paths)} images ({a.runtime}, cache {cache}) ...", flush=True)
        t0 = time.perf_counter()
        emb_model = load_embedder(model_path, runtime=a.runtime, cache_dir=cache / "tflite")
        emb, ok, n_new = embed_cached(emb_model, model_path, a.runtime, all_paths, cache, progress=False)
        print(f"  {emb_model.dim}-d, {n_new} embedded now, {time.perf_counter() - t0:.0f} s", flush=True)
        fit_rows = np.array([row[p] for p in train_paths if p and ok[row[p]]])
        for option in options_for(name, default):
            transform, dims, nbytes = fit_option(option, emb[fit_rows])
            z = np.full((len(emb), dims), np.nan, np.float32)
            z[ok] = transform(emb[ok])
            s_val = scores_of(z, ok, row, val, rd.path_of)
            keep = ~np.isnan(s_val)
            thr, val_f1 = best_threshold(val_y[keep], s_val[keep])
            r = {"model": name + (" ← default" + note if name == default else ""), "option": option, "dims": dims,
                 "bytes/vector": nbytes, "10M GiB": nbytes * 1e7 / 2**30, "val F1": val_f1, "threshold": thr}
            for set_name, (pairs, y, po) in sets.items():
                s = np.nan_to_num(scores_of(z, ok, row, pairs, po), nan=-1.0)
                m = pair_metrics(y, s, thr)
                r[f"{set_name} AUC"], r[f"{set_name} F1"] = m["roc_auc"], m["f1"]
            if not a.no_grouping and group_sets:
                rows_v = np.array([row[p] for p in val_imgs])
                choice = G.choose_grouping(z[rows_v], truth_val, np.full(len(rows_v), "train", object),
                                           GROUP_THRESHOLDS, k=k, ok=ok[rows_v])
                r["grouping"] = f"{choice.threshold:.2f} {choice.variant}"
                for set_name, (rows_g, truth) in group_sets.items():
                    use = ok[rows_g]
                    sweep = G.sweep_rows(z[rows_g[use]], np.arange(int(use.sum())), truth[use], [choice.threshold],
                                         k=k, min2_margin=choice.min2_margin, variants=[choice.variant])
                    r[f"{set_name} group F1"] = float(sweep.rowwise_f1.iloc[0])
            results.append(r)
            print("  " + "  ".join(f"{c}={v:.4g}" if isinstance(v, float) else f"{c}={v}" for c, v in r.items()),
                  flush=True)

    df = pd.DataFrame(results)
    print()
    print(f"run {run} (default model {default}{note}); fitted on {len(fit_rows)} train images; thresholds on "
          f"{len(val)} validation pairs; " + "; ".join(
              f"{n}: {len(p)} pairs ({int(y.sum())} duplicates) of {data if n == 'test' else shift}"
              for n, (p, y, _) in sets.items()) + f"; grouping k={k}; {time.perf_counter() - t_start:.0f} s")
    print(df.to_markdown(index=False, floatfmt=".4f"))
    if a.out:
        df.to_csv(a.out, index=False)
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
