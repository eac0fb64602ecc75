"""Compare two images interactively in JupyterLab: both images, the similarity, the decision, the neighbours.

    cmp = Comparer(embedder, paths, emb, ok, threshold=0.56)
    cmp.figure(paths[0], paths[1])        # static: works in papermill, in a report, anywhere
    compare_widget(cmp)                   # interactive (ipywidgets): pick or upload two images

:class:`Comparer` holds a collection (paths and their embeddings) and a faiss index over it;
:meth:`Comparer.compare` embeds any two images (a collection member is looked up, anything
else — an uploaded file — is embedded on the spot) and returns the cosine similarity, the
decision at the threshold, and each image's nearest neighbours in the collection.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from nnutils.scale.index import build_index, search
from nnutils.views.plotting import thumbnail

__all__ = ["Comparer", "compare_widget"]


class Comparer:
    """Similarity, decision and neighbours for any two images, against a collection.

    Parameters
    ----------
    embedder : TFLiteEmbedder or KerasEmbedder
        An :mod:`nnutils.models.embedders` embedder (``embed_paths``), for images outside the
        collection.
    paths : sequence of str, length N
        The collection's image paths.
    emb : ndarray, shape (N, D)
        Their L2-normalised embeddings.
    ok : ndarray of bool, shape (N,)
        Which are readable.
    threshold : float
        Cosine similarity at or above which two images are "the same photo".
    k : int, default 4
        Neighbours to show per image.
    """

    def __init__(self, embedder, paths: Sequence[str], emb: np.ndarray, ok: np.ndarray, threshold: float,
                 k: int = 4):
        self.embedder, self.threshold, self.k = embedder, float(threshold), int(k)
        self.paths = [str(p) for p in paths]
        ok = np.asarray(ok, bool)
        self._rows = np.flatnonzero(ok)
        self._ok = set(self._rows.tolist())
        self._emb = np.asarray(emb, np.float32)
        self._pos = {p: i for i, p in enumerate(self.paths)}
        self._index = build_index(self._emb[self._rows], kind="auto") if len(self._rows) else None

    def embedding(self, path) -> np.ndarray | None:
        """The embedding of ``path``: from the collection, else computed now.

        Parameters
        ----------
        path : str or Path

        Returns
        -------
        ndarray of float32, shape (D,), or None
            None when the image cannot be read.
        """
        i = self._pos.get(str(path))
        if i is not None and i in self._ok:
            return self._emb[i]
        e, ok = self.embedder.embed_paths([str(path)], progress=False)
        return e[0] if ok[0] else None

    def neighbours(self, vec: np.ndarray, exclude: str | None = None) -> pd.DataFrame:
        """The ``k`` nearest collection images to ``vec``.

        Parameters
        ----------
        vec : ndarray of float32, shape (D,), or None
            A unit-norm embedding; None gives an empty table.
        exclude : str, optional
            A path left out of the result (the query itself).

        Returns
        -------
        DataFrame
            At most ``k`` rows: ``path`` and ``similarity`` (cosine, descending).
        """
        if self._index is None or vec is None:
            return pd.DataFrame({"path": [], "similarity": []})
        s, ids = search(self._index, vec[None].astype(np.float32), min(self.k + 1, len(self._rows)))
        out = pd.DataFrame({"path": [self.paths[self._rows[j]] for j in ids[0] if j >= 0],
                            "similarity": s[0][ids[0] >= 0]})
        return out[out.path != str(exclude)].head(self.k).reset_index(drop=True)

    def compare(self, path1, path2) -> dict:
        """Compare two images.

        Parameters
        ----------
        path1, path2 : str or Path

        Returns
        -------
        dict
            ``similarity`` (float cosine in [-1, 1], NaN if either is unreadable), ``same`` (0/1,
            0 when unreadable: the pairs policy), ``neighbours1``/``neighbours2`` (DataFrames of
            :meth:`neighbours`).
        """
        e1, e2 = self.embedding(path1), self.embedding(path2)
        sim = float(e1 @ e2) if e1 is not None and e2 is not None else float("nan")
        return dict(similarity=sim, same=int(np.isfinite(sim) and sim >= self.threshold),
                    neighbours1=self.neighbours(e1, path1), neighbours2=self.neighbours(e2, path2))

    def figure(self, path1, path2, names: tuple[str, str] | None = None):
        """A matplotlib figure: the two images on top, each one's neighbours below, the verdict in the title.

        Parameters
        ----------
        path1, path2 : str or Path
        names : tuple of str, optional
            Titles of the two images (default: their file names).

        Returns
        -------
        matplotlib.figure.Figure
        """
        import matplotlib.pyplot as plt

        r = self.compare(path1, path2)
        k = self.k
        fig = plt.figure(figsize=(2.2 * max(2 * k, 4), 6.2))
        gs = fig.add_gridspec(2, 2 * k, height_ratios=[2.2, 1])
        names = names or (Path(str(path1)).name, Path(str(path2)).name)
        for col, (p, nm) in enumerate(zip((path1, path2), names)):
            ax = fig.add_subplot(gs[0, col * k:(col + 1) * k])
            img, err = thumbnail(str(p), 320)
            ax.imshow(img)
            ax.set_title(nm if err is None else f"{nm}\n({err})", fontsize=9)
            ax.axis("off")
            nb = r[f"neighbours{col + 1}"]
            for t in range(k):
                ax = fig.add_subplot(gs[1, col * k + t])
                ax.axis("off")
                if t < len(nb):
                    ax.imshow(thumbnail(nb.path[t], 128)[0])
                    ax.set_title(f"{nb.similarity[t]:.3f}", fontsize=8)
        sim = r["similarity"]
        verdict = "unreadable → 0" if not np.isfinite(sim) else ("SAME photo (1)" if r["same"] else "different (0)")
        fig.suptitle(f"cosine similarity {sim:.4f} · threshold {self.threshold:.4f} · {verdict}\n"
                     f"bottom: nearest neighbours of each in the collection", fontsize=11)
        fig.tight_layout()
        return fig


def compare_widget(comparer: Comparer, choices: Sequence[str] | None = None, value: tuple[str, str] | None = None):
    """An ipywidgets panel: two dropdowns over the collection (or ``choices``) and two upload buttons.

    Changing either side redraws :meth:`Comparer.figure`. Uploaded files are written to a
    temporary folder and embedded on the spot.

    Parameters
    ----------
    comparer : Comparer
    choices : sequence of str, optional
        Paths offered in the dropdowns (default: the collection).
    value : tuple of str, optional
        The two initial paths (default: the first two choices).

    Returns
    -------
    ipywidgets.VBox
        Display it.

    Raises
    ------
    ValueError
        When there is nothing to choose from.
    """
    import ipywidgets as W
    import matplotlib.pyplot as plt

    options = [(Path(p).name, p) for p in (choices or comparer.paths)]
    if not options:
        raise ValueError("no images to choose from")
    v = value or (options[0][1], options[min(1, len(options) - 1)][1])
    picks = [W.Dropdown(options=options, value=v[i], description=f"image {i + 1}",
                        layout=W.Layout(width="360px")) for i in range(2)]
    uploads = [W.FileUpload(accept="image/*", multiple=False, description=f"upload {i + 1}") for i in range(2)]
    out = W.Output()
    chosen = list(v)
    tmp = Path(tempfile.mkdtemp(prefix="nnutils-compare-"))

    def redraw(*_):
        # set the Output widget's content directly rather than capturing with `with out:`:
        # the capture path can block headless runners (papermill/nbclient) waiting on comm messages
        fig = comparer.figure(*chosen)
        out.outputs = ()
        out.append_display_data(fig)
        plt.close(fig)

    def on_pick(i):
        def f(change):
            chosen[i] = change["new"]
            redraw()
        return f

    def on_upload(i):
        def f(change):
            files = change["new"]
            if not files:
                return
            item = files[0]
            path = tmp / f"{i}_{Path(item['name']).name}"
            path.write_bytes(bytes(item["content"]))
            chosen[i] = str(path)
            redraw()
        return f

    for i in range(2):
        picks[i].observe(on_pick(i), names="value")
        uploads[i].observe(on_upload(i), names="value")
    redraw()
    return W.VBox([W.HBox([picks[0], uploads[0]]), W.HBox([picks[1], uploads[1]]), out])
