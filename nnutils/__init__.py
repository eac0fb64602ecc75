"""nnutils: the tested helper package behind the near-duplicate image matching notebooks.

Each module does one job; notebooks call them and plot.

Data
    :mod:`~nnutils.images` (robust reading: modes, EXIF, bad files → reasons),
    :mod:`~nnutils.download` (concurrent cached URL downloads),
    :mod:`~nnutils.pairs` (LUN.UA CSV formats, validation, unreadable-image policy),
    :mod:`~nnutils.photos`, :mod:`~nnutils.distortions`, :mod:`~nnutils.synth` (the embedded
    dataset and its CLI), :mod:`~nnutils.grouping` (groups, leak-free split, balancing,
    triplets), :mod:`~nnutils.eda`
Models
    :mod:`~nnutils.backbones` (registry, offline weights, TF-Hub), :mod:`~nnutils.efficientnet_lite`,
    :mod:`~nnutils.models` (pooling, head, embedder), :mod:`~nnutils.losses`,
    :mod:`~nnutils.features` (cached backbone outputs), :mod:`~nnutils.training`,
    :mod:`~nnutils.experiments` (the steps of notebooks 03–06),
    :mod:`~nnutils.delf` (DELF-style learned local features: attention keypoints, PCA descriptors)
Decisions
    :mod:`~nnutils.metrics`, :mod:`~nnutils.baselines` (perceptual hashes),
    :mod:`~nnutils.thresholds` (CV threshold, HParams), :mod:`~nnutils.evaluation`,
    :mod:`~nnutils.submission`, :mod:`~nnutils.inference` (TFLite, fast decoding),
    :mod:`~nnutils.predict` (CLI), :mod:`~nnutils.local_features` (SIFT/ORB + the geometric
    check), :mod:`~nnutils.fusion` (per-pair features, uncertain band, learned decision)
Scale
    :mod:`~nnutils.index` (faiss kNN over unit embeddings: flat / IVF / HNSW, ``auto`` by size),
    :mod:`~nnutils.retrieval` (queries vs references: top-k, mAP / recall@k, alpha-QE, DBA),
    :mod:`~nnutils.dedup` (groups of duplicates in a collection, files to remove; CLI),
    :mod:`~nnutils.projector` (TensorBoard embedding projector), :mod:`~nnutils.widgets`
    (interactive comparison)
Running
    :mod:`~nnutils.profiles` (+ ``profiles.yaml``), :mod:`~nnutils.pipeline` (CLI), :mod:`~nnutils.plotting`

Importing ``nnutils`` does not import TensorFlow.
"""
__version__ = "0.1.0"
