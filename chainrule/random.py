"""Where randomness comes from: an explicit numpy Generator, a seed, or the library's own default.

Every initialiser, shuffle and dropout takes `rng`; `manual_seed` seeds the default generator used
when none is given. The global `np.random` state is never read or changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_default_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Seed the generator used where no `rng` is passed (as torch.manual_seed); returns it."""
    global _default_generator
    _default_generator = np.random.default_rng(seed)
    return _default_generator


def get_rng(rng: Any = None) -> np.random.Generator:
    """A Generator from `rng`: a Generator as is, an int seeds a new one, None gives the default."""
    if rng is None:
        return _default_generator
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")
