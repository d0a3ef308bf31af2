"""The engine's memory handler: a large freed block serves the next array of its size, only
inside the engine's ops, never more than the limit, and never changes a result."""

import os

import numpy as np
import pytest

import chainrule as cr
from chainrule import memory, nn, optim
from chainrule.tensor import apply

needs_handler = pytest.mark.skipif(not memory.AVAILABLE, reason="memory handler not built")
LARGE = 2**20 // 4  # float32 elements of 1 MiB


def address(array):
    return array.__array_interface__["data"][0]


def handler_name():
    core = np._core if hasattr(np, "_core") else np.core  # NumPy 2 renamed it
    return core.multiarray.get_handler_name()


@pytest.mark.skipif(bool(os.environ.get("CHAINRULE_NO_KERNELS")), reason="kernels switched off")
def test_the_handler_is_built_where_the_kernels_are():
    from chainrule import kernels

    assert memory.AVAILABLE == kernels.AVAILABLE


@needs_handler
def test_a_freed_large_block_serves_the_next_array_of_its_size():
    memory.release()
    previous = memory.use_spares()
    try:
        first = np.ones(LARGE, dtype=np.float32)
        where = address(first)
        del first
        assert memory.kept_bytes() == 4 * LARGE
        second = np.empty(LARGE, dtype=np.float32)
    finally:
        memory.restore(previous)
    assert address(second) == where
    assert memory.kept_bytes() == 0


@needs_handler
def test_zeros_from_a_reused_block_are_zeros():
    previous = memory.use_spares()
    try:
        first = np.full(LARGE, 7.0, dtype=np.float32)
        del first
        second = np.zeros(LARGE, dtype=np.float32)
    finally:
        memory.restore(previous)
    assert not second.any()


@needs_handler
def test_small_arrays_and_arrays_made_outside_are_not_kept():
    memory.release()
    previous = memory.use_spares()
    try:
        small = np.ones(1000, dtype=np.float32)
        del small
    finally:
        memory.restore(previous)
    outside = np.ones(LARGE, dtype=np.float32)
    del outside
    assert memory.kept_bytes() == 0


@needs_handler
def test_at_most_64_mib_are_kept_and_release_frees_them():
    previous = memory.use_spares()
    try:
        arrays = [np.ones(4 * LARGE, dtype=np.float32) for _ in range(20)]  # 20 × 4 MiB
        del arrays
    finally:
        memory.restore(previous)
    assert memory.kept_bytes() == 64 * 2**20
    assert memory.release() == 64 * 2**20
    assert memory.kept_bytes() == 0


@needs_handler
def test_an_array_grown_by_resize_is_freed_without_harm():
    previous = memory.use_spares()
    try:
        grown = np.ones(1000, dtype=np.float32)
        grown.resize(LARGE + 1000, refcheck=False)  # realloc: a malloc block, kept only if it fits
        grown[:] = 1
        del grown
        again = np.ones(LARGE + 1000, dtype=np.float32)
    finally:
        memory.restore(previous)
    assert again.sum() == LARGE + 1000


@needs_handler
def test_the_handler_is_current_only_inside_the_engines_large_ops_even_when_one_raises():
    seen = []

    def failing(x):
        seen.append(handler_name())
        raise ValueError("no")

    before = handler_name()
    with pytest.raises(ValueError):
        apply(failing, cr.tensor(np.ones(LARGE, dtype=np.float32), requires_grad=True))
    assert seen == ["chainrule_spares"]
    assert handler_name() == before


@needs_handler
def test_small_ops_and_their_backward_keep_numpys_own_allocator():
    # Switching the allocator costs 1-2 µs an op: 7% of a 2-16-16-2 step's eager time.
    seen = []

    def noting(x):
        seen.append(handler_name())

        def backward(g):
            seen.append(handler_name())
            return (g,)

        return x * 2, backward

    before = handler_name()
    cr.tensor(1.0, requires_grad=True).backward()  # ends whatever earlier tests left pending
    for size in (4, LARGE):  # after a large op, its backward pass goes through the cache too
        apply(
            noting, cr.tensor(np.ones(size, dtype=np.float32), requires_grad=True)
        ).sum().backward()
    assert seen == [before, before, "chainrule_spares", "chainrule_spares"]
    assert handler_name() == before


def test_a_training_step_gives_the_same_weights_with_and_without_the_handler(monkeypatch):
    def train():
        model = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, rng=0),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * 16 * 16, 10, rng=1),
        )
        optimizer = optim.SGD(model.parameters(), lr=0.1)
        rng = np.random.default_rng(0)
        for _ in range(3):
            x = rng.standard_normal((16, 1, 32, 32)).astype(np.float32)
            y = rng.integers(0, 10, 16)
            optimizer.zero_grad()
            cr.functional.cross_entropy(model(cr.tensor(x)), y).backward()
            optimizer.step()
        return [p.data.copy() for p in model.parameters()]

    with_handler = train()
    monkeypatch.setattr(memory, "use_spares", lambda: None)
    monkeypatch.setattr(memory, "restore", lambda previous: None)
    without = train()
    for a, b in zip(with_handler, without, strict=True):
        np.testing.assert_array_equal(a, b)
