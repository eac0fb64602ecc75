"""Shared pytest fixtures."""

import pytest

from tests.image_corpus import make_bad_image_corpus


@pytest.fixture(scope="session")
def bad_image_corpus(tmp_path_factory):
    """``{name: (path, Expected)}`` of good and bad image files (see tests/image_corpus.py).

    Session-scoped and shared: tests must not modify the files.
    """
    return make_bad_image_corpus(tmp_path_factory.mktemp("bad_image_corpus"))


@pytest.fixture(scope="module")
def one_faiss_thread():
    """One OpenMP thread for faiss: on a shared 2-core machine its spinning threads slow down 20×."""
    import faiss
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
