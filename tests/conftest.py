"""Strict mode for every test: RuntimeWarnings are errors (pyproject), a seeded Generator fixture."""

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("chainrule", deadline=None, max_examples=40)
settings.load_profile("chainrule")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
