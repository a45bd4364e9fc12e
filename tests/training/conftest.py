"""Training tests run torch on one thread (timings and float sums stay comparable)."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield
