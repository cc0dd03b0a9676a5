"""The docs' examples (``docs/*.md``, run by pytest as doctests) train and evaluate a run:
they are in the slow tier."""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.suffix == ".md":
            item.add_marker(pytest.mark.slow)
