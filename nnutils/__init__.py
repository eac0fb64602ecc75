"""nnutils: the tested package behind the near-duplicate image matching notebooks.

The package is built in wings; a module imports only from its own wing or the ones above
it in this list, so the imports run one way, from the commands down to the data:

``nnutils.data``
    Files and tables: reading any image robustly, fast decoding, downloads, the content
    cache, the LUN pair CSVs, the embedded dataset's photos, distortions and builder, its
    side tables, photo groups and the leak-free split, EDA.
``nnutils.models``
    Keras 3 models: backbones (offline weights, TF-Hub), pooling and heads, losses,
    saving/loading, the TFLite runtime, the embedders that turn files into unit vectors.
``nnutils.train``
    Training on cached backbone outputs: feature banks, the training loops of notebooks
    03–06, hard-example mining, seeds/optimiser/callbacks, run folders.
``nnutils.local``
    Local features and the geometric check: SIFT/ORB keypoints and matching, the
    verification of one photo mapped onto another, DELF-style attentive features.
``nnutils.decide``
    From scores to decisions: metrics, scoring against labels, perceptual hashes,
    thresholds, the fused decision, model comparison, the run's :class:`Decision`,
    submissions, pair prediction.
``nnutils.scale``
    Collections: faiss indexes, grouping duplicates, retrieval, the dedup of a folder.
``nnutils.views``
    Plots, the interactive comparison widget, the TensorBoard projector export.

At the top: :mod:`nnutils.profiles` (+ ``profiles.yaml``: every notebook setting, per
profile), :mod:`nnutils.pipeline` (runs the numbered notebooks with papermill), and the
command front-ends ``python -m nnutils.predict``, ``python -m nnutils.dedup`` and
``python -m nnutils.synth``. ``docs/architecture.md`` has the map.

Importing ``nnutils`` (or any module outside ``models``/``train``) does not import TensorFlow.
"""
__version__ = "0.1.0"
