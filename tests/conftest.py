"""Shared pytest fixtures."""

import pytest

from tests.image_corpus import make_bad_image_corpus


@pytest.fixture(scope="session")
def bad_image_corpus(tmp_path_factory):
    """``{name: (path, Expected)}`` of good and bad image files (see tests/image_corpus.py).

    Session-scoped and shared: tests must not modify the files.
    """
    return make_bad_image_corpus(tmp_path_factory.mktemp("bad_image_corpus"))
