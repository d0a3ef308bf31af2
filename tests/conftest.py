"""Strict mode for all tests: RuntimeWarnings are errors (pyproject); a seeded Generator fixture."""

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("chainrule", deadline=None, max_examples=40)
settings.load_profile("chainrule")


@pytest.fixture(scope="session", autouse=True)
def one_blas_thread():
    """Two OpenBLAS threads on a busy 2-core machine can make a small matmul 100x slower; the
    tests time nothing, so one thread keeps them fast and steady."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)
