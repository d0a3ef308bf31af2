"""chainrule.compile: a compiled step gives the eager step's numbers, call after call.

Each test builds the same model and optimizer twice from one seed, runs one copy eagerly and the
other through `chainrule.compile`, on the same batches, and compares losses, parameters and
gradients: float64 to 1e-12 relative, float32 to float32 rounding.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chainrule as cr
from chainrule import compile as compile_module  # noqa: F401  (the package is importable)
from chainrule import functional as F
from chainrule import kernels, nn, optim
from tests.test_optim import CONFIG_IDS, CONFIGS

BACKENDS = ["python", "numpy", "auto"]
DTYPES = [np.float64, np.float32]
TOLERANCE = {np.float64: 1e-12, np.float32: 2e-5}


def assert_close(a, b, dtype):
    """Equal to rounding: relative to each value, and to the array's scale for values near 0."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(b)))) if b.size else 1.0
    np.testing.assert_allclose(a, b, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * scale)


def twins(build, seed=0):
    """Two identical (model, optimizer) pairs from one seed."""
    return build(np.random.default_rng(seed)), build(np.random.default_rng(seed))


def training_step(model, optimizer, loss_function):
    def step(x, y):
        optimizer.zero_grad()
        loss = loss_function(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return step


def run_both(build, loss_function, batches, dtype, backend="numpy", between=None):
    """Eager and compiled runs over `batches`; checks every loss, and the end state."""
    (model_a, opt_a), (model_b, opt_b) = twins(build)
    eager = training_step(model_a, opt_a, loss_function)
    compiled = cr.compile(training_step(model_b, opt_b, loss_function), backend=backend)
    for i, (x, y) in enumerate(batches):
        if between is not None:
            between(i, opt_a, opt_b)
        expected = eager(x, y)
        got = compiled(x, y)
        assert isinstance(got, cr.Tensor)
        assert_close(got.data, expected.data, dtype)
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert_close(q.data, p.data, dtype)
        assert_close(q.grad, p.grad, dtype)
    for (_, a), (_, b) in zip(model_a.named_buffers(), model_b.named_buffers()):
        assert_close(b, a, dtype)
    return compiled


def regression_batches(dtype, n=8, features=3, outputs=1, steps=12, seed=1):
    rng = np.random.default_rng(seed)
    return [
        (
            rng.standard_normal((n, features)).astype(dtype),
            rng.standard_normal((n, outputs)).astype(dtype),
        )
        for _ in range(steps)
    ]


def class_batches(dtype, n=8, features=3, classes=4, steps=12, seed=1):
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((n, features)).astype(dtype), rng.integers(0, classes, n))
        for _ in range(steps)
    ]


def mlp(dtype, *middle, features=3, outputs=1, optimizer=optim.SGD, **options):
    options = options or {"lr": 0.1}

    def build(rng):
        model = nn.Sequential(
            nn.Linear(features, 5, dtype=dtype, rng=rng),
            *copy.deepcopy(middle),  # each twin its own layers
            nn.Linear(5, outputs, dtype=dtype, rng=rng),
        )
        return model, optimizer(model.parameters(), **options)

    return build


# ---- layers ------------------------------------------------------------------------------------
LAYERS = {
    "sigmoid": lambda dtype: [nn.Sigmoid()],
    "tanh": lambda dtype: [nn.Tanh()],
    "relu": lambda dtype: [nn.ReLU()],
    "leaky_relu": lambda dtype: [nn.LeakyReLU(0.1)],
    "gelu": lambda dtype: [nn.GELU()],
    "gelu_tanh": lambda dtype: [nn.GELU("tanh")],
    "softplus": lambda dtype: [nn.Softplus()],
    "softmax": lambda dtype: [nn.Softmax()],
    "layer_norm": lambda dtype: [nn.LayerNorm(5, dtype=dtype), nn.Tanh()],
    "batch_norm": lambda dtype: [nn.BatchNorm1d(5, dtype=dtype), nn.ReLU()],
    "linear_only": lambda dtype: [],
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", list(LAYERS))
def test_every_layer_compiles_to_the_eager_numbers(layer, dtype, backend):
    build = mlp(dtype, *LAYERS[layer](dtype), optimizer=optim.SGD, lr=0.1, momentum=0.9)
    run_both(build, F.mse_loss, regression_batches(dtype), dtype, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_draws_the_same_masks_from_the_same_generator(dtype, backend):
    def build(rng):
        model = nn.Sequential(
            nn.Linear(3, 5, dtype=dtype, rng=rng),
            nn.ReLU(),
            nn.Dropout(0.3, rng=np.random.default_rng(7)),
            nn.Linear(5, 1, dtype=dtype, rng=rng),
        )
        return model, optim.SGD(model.parameters(), lr=0.1)

    run_both(build, F.mse_loss, regression_batches(dtype), dtype, backend)


def test_dropout_with_the_default_generator_follows_manual_seed():
    dtype = np.float64

    def build(rng):
        model = nn.Sequential(nn.Linear(3, 5, dtype=dtype, rng=rng), nn.Dropout(0.5))
        model.layers.append(nn.Linear(5, 1, dtype=dtype, rng=rng))
        return model, optim.SGD(model.parameters(), lr=0.1)

    (model_a, opt_a), (model_b, opt_b) = twins(build)
    eager = training_step(model_a, opt_a, F.mse_loss)
    compiled = cr.compile(training_step(model_b, opt_b, F.mse_loss))
    for x, y in regression_batches(dtype, steps=5):
        cr.manual_seed(3)
        expected = eager(x, y)
        cr.manual_seed(3)
        assert_close(compiled(x, y).data, expected.data, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_in_eval_mode_reads_the_running_statistics_of_each_call(backend):
    dtype = np.float64
    model = nn.Sequential(nn.Linear(3, 4, dtype=dtype, rng=0), nn.BatchNorm1d(4, dtype=dtype))
    opt = optim.SGD(model.parameters(), lr=0.1)
    train = cr.compile(training_step(model, opt, F.mse_loss), backend=backend)
    predict = cr.compile(lambda x: model(x), backend=backend)
    for x, y in regression_batches(dtype, outputs=4, steps=4):
        model.train()
        train(x, y)
        model.eval()
        compiled = predict(x)
        with cr.no_grad():
            assert_close(compiled.data, model(x).data, dtype)
    assert predict.cache_info()["traces"] == 1


# ---- losses ------------------------------------------------------------------------------------
def bce_setup(dtype):
    build = mlp(dtype, nn.Tanh(), optimizer=optim.SGD, lr=0.1)

    def with_sigmoid(rng):
        model, opt = build(rng)
        model.layers.append(nn.Sigmoid())
        return model, opt

    rng = np.random.default_rng(2)
    batches = [
        (rng.standard_normal((8, 3)).astype(dtype), rng.integers(0, 2, (8, 1)).astype(dtype))
        for _ in range(10)
    ]
    return with_sigmoid, batches


LOSSES = {
    "mse": lambda dtype: (mlp(dtype, nn.Tanh()), F.mse_loss, regression_batches(dtype)),
    "huber": lambda dtype: (mlp(dtype, nn.Tanh()), F.huber_loss, regression_batches(dtype)),
    "bce": lambda dtype: (bce_setup(dtype)[0], F.binary_cross_entropy, bce_setup(dtype)[1]),
    "bce_logits": lambda dtype: (
        mlp(dtype, nn.Tanh()),
        F.binary_cross_entropy_with_logits,
        bce_setup(dtype)[1],
    ),
    "cross_entropy": lambda dtype: (
        mlp(dtype, nn.ReLU(), outputs=4),
        F.cross_entropy,
        class_batches(dtype),
    ),
    "cross_entropy_sum": lambda dtype: (
        mlp(dtype, nn.ReLU(), outputs=4),
        lambda z, t: F.cross_entropy(z, t, reduction="sum"),
        class_batches(dtype),
    ),
    "cross_entropy_probabilities": lambda dtype: (
        mlp(dtype, nn.ReLU(), outputs=4),
        F.cross_entropy,
        [(x, np.eye(4, dtype=dtype)[t]) for x, t in class_batches(dtype)],
    ),
    "nll": lambda dtype: (
        mlp(dtype, nn.ReLU(), outputs=4),
        lambda z, t: F.nll_loss(F.log_softmax(z), t),
        class_batches(dtype),
    ),
    "mse_sum": lambda dtype: (
        mlp(dtype, nn.Sigmoid()),
        lambda a, b: F.mse_loss(a, b, reduction="sum"),
        regression_batches(dtype),
    ),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", list(LOSSES))
def test_every_loss_compiles_to_the_eager_numbers(loss, dtype, backend):
    build, loss_function, batches = LOSSES[loss](dtype)
    run_both(build, loss_function, batches, dtype, backend)


# ---- optimizers --------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["python", "numpy", "auto"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=CONFIG_IDS)
def test_every_optimizer_compiles_to_the_eager_numbers(name, options, dtype, backend):
    build = mlp(dtype, nn.Tanh(), optimizer=getattr(optim, name), **options)
    run_both(build, F.mse_loss, regression_batches(dtype, steps=8), dtype, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_learning_rate_changed_between_steps_applies_at_the_next_replay(backend):
    def change(i, *optimizers):
        for opt in optimizers:
            opt.param_groups[0]["lr"] = 0.1 / (1 + i)

    build = mlp(np.float64, nn.Sigmoid(), optimizer=optim.Adam, lr=0.01)
    run_both(build, F.mse_loss, regression_batches(np.float64), np.float64, backend, change)


def test_a_schedule_drives_the_compiled_steps_learning_rate():
    schedules = {}

    def step_schedule(i, opt_a, opt_b):
        if i == 0:
            schedules["a"] = optim.StepLR(opt_a, step_size=2, gamma=0.5)
            schedules["b"] = optim.StepLR(opt_b, step_size=2, gamma=0.5)
        else:
            schedules["a"].step()
            schedules["b"].step()

    build = mlp(np.float64, nn.Tanh(), optimizer=optim.SGD, lr=0.2, momentum=0.9)
    run_both(build, F.mse_loss, regression_batches(np.float64), np.float64, "numpy", step_schedule)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_clipping_is_replayed(backend):
    def step_with_clipping(model, opt, _):
        def step(x, y):
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            optim.clip_grad_norm_(model.parameters(), 0.05)
            optim.clip_grad_value_(model.parameters(), 0.01)
            opt.step()
            return loss

        return step

    build = mlp(np.float64, nn.Tanh(), optimizer=optim.SGD, lr=0.5)
    (model_a, opt_a), (model_b, opt_b) = twins(build)
    eager = step_with_clipping(model_a, opt_a, None)
    compiled = cr.compile(step_with_clipping(model_b, opt_b, None), backend=backend)
    for x, y in regression_batches(np.float64):
        assert_close(compiled(x, y).data, eager(x, y).data, np.float64)
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert_close(q.data, p.data, np.float64)


# ---- many steps, random networks ----------------------------------------------------------------
def test_xor_float64_stays_within_1e_12_after_many_steps():
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    y = np.array([[0], [1], [1], [0]], dtype=np.float64)

    def build(rng):
        model = nn.Sequential(
            nn.Linear(2, 4, dtype=np.float64, rng=rng),
            nn.Sigmoid(),
            nn.Linear(4, 1, dtype=np.float64, rng=rng),
            nn.Sigmoid(),
        )
        return model, optim.SGD(model.parameters(), lr=1.0)

    compiled = run_both(build, F.mse_loss, [(x, y)] * 2000, np.float64, "auto")
    assert compiled.last_replay == ("c" if kernels.replay is not None else "numpy")


ACTIVATIONS = [nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Softplus, lambda: nn.LeakyReLU(0.2)]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    widths=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    activation=st.integers(0, len(ACTIVATIONS) - 1),
    batch=st.integers(2, 9),
    dtype=st.sampled_from(DTYPES),
    adam=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_networks_compile_to_the_eager_numbers(widths, activation, batch, dtype, adam, seed):
    sizes = [3, *widths, 2]

    def build(rng):
        layers = []
        for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
            layers.append(nn.Linear(n_in, n_out, dtype=dtype, rng=rng))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        model = nn.Sequential(*layers)
        opt = (
            optim.Adam(model.parameters(), lr=0.01) if adam else optim.SGD(model.parameters(), 0.1)
        )
        return model, opt

    batches = class_batches(dtype, n=batch, classes=2, steps=6, seed=seed)
    run_both(build, F.cross_entropy, batches, dtype, "auto")


# ---- signatures and the cache ------------------------------------------------------------------
def test_a_new_batch_size_traces_again_and_both_traces_are_kept():
    build = mlp(np.float64, nn.ReLU(), outputs=4)
    full = class_batches(np.float64, n=8, steps=3)
    last = class_batches(np.float64, n=5, steps=3, seed=9)
    batches = [full[0], full[1], last[0], full[2], last[1], last[2]]
    compiled = run_both(build, F.cross_entropy, batches, np.float64)
    info = compiled.cache_info()
    assert info["traces"] == 2 and info["replays"] == 4 and info["cached"] == 2


def test_the_cache_keeps_only_the_latest_traces():
    compiled = cr.compile(lambda x: cr.tensor(x) * 2.0, cache_size=2)
    for n in (1, 2, 3, 1):
        compiled(np.ones(n))
    assert compiled.cache_info()["traces"] == 4  # size 1 was evicted by size 3


def test_switching_between_train_and_eval_traces_once_per_mode():
    dtype = np.float64
    model = nn.Sequential(nn.Linear(3, 4, dtype=dtype, rng=0), nn.Dropout(0.5, rng=1))
    forward = cr.compile(lambda x: model(x))
    x = np.ones((2, 3))
    for _ in range(3):
        model.train()
        forward(x)
        model.eval()
        np.testing.assert_array_equal(forward(x).data, model(x).data)
    assert forward.cache_info()["traces"] == 2


def test_replacing_a_parameters_array_traces_again():
    model = nn.Linear(2, 1, dtype=np.float64, rng=0)
    forward = cr.compile(lambda x: model(x))
    x = np.ones((1, 2))
    forward(x)
    model.weight.data = np.zeros((1, 2))
    np.testing.assert_array_equal(forward(x).data, model.bias.data[None, :])
    assert forward.cache_info()["traces"] == 2


def test_the_fast_path_checks_the_parameters_and_arguments_at_every_call():
    model, opt = mlp(np.float64, nn.Tanh())(np.random.default_rng(0))
    twin, twin_opt = mlp(np.float64, nn.Tanh())(np.random.default_rng(0))
    compiled = cr.compile(training_step(model, opt, F.mse_loss))
    eager = training_step(twin, twin_opt, F.mse_loss)
    batches = regression_batches(np.float64, steps=6)
    for i, (x, y) in enumerate(batches):
        if i == 3:  # replaced between replays: a new trace, as in eager
            for module, other in ((model, twin), (opt, twin_opt)):
                module.load_state_dict(copy.deepcopy(other.state_dict()))
        if i == 4:
            x = x.astype(np.float32)  # another dtype: another signature
        given = y.tolist() if i == 2 else y  # not an array: the general path converts it
        assert_close(compiled(x, given).data, eager(x, y).data, np.float64)
        for p, q in zip(model.parameters(), twin.parameters()):
            assert_close(p.grad, q.grad, np.float64)
    assert compiled.cache_info()["traces"] >= 2


def test_a_float64_batch_given_to_a_float32_network_is_converted_at_each_replay():
    build = mlp(np.float32, nn.Tanh())
    batches = [(x.astype(np.float64), y) for x, y in regression_batches(np.float32)]
    run_both(build, F.mse_loss, batches, np.float32)


def test_gradients_accumulate_across_calls_without_zero_grad_as_in_eager():
    def build(rng):
        model = nn.Linear(3, 1, dtype=np.float64, rng=rng)
        return model, optim.SGD(model.parameters(), lr=0.1)

    (model_a, _), (model_b, _) = twins(build)

    def accumulate(model):
        def step(x, y):
            loss = F.mse_loss(model(x), y)
            loss.backward()
            return loss

        return step

    eager, compiled = accumulate(model_a), cr.compile(accumulate(model_b))
    for x, y in regression_batches(np.float64, steps=4):
        eager(x, y)
        compiled(x, y)
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert_close(q.grad, p.grad, np.float64)


# ---- results -----------------------------------------------------------------------------------
def test_the_returned_loss_is_a_fresh_tensor_that_later_calls_leave_alone():
    build = mlp(np.float64, nn.Tanh())
    model, opt = build(np.random.default_rng(0))
    compiled = cr.compile(training_step(model, opt, F.mse_loss))
    batches = regression_batches(np.float64, steps=4)
    losses = [compiled(x, y) for x, y in batches]
    values = [loss.item() for loss in losses]
    compiled(*batches[0])
    assert [loss.item() for loss in losses] == values
    assert len({id(loss.data) for loss in losses}) == 4


def test_forward_only_functions_compile_too():
    model = nn.Sequential(nn.Linear(3, 6, rng=0), nn.GELU(), nn.Linear(6, 2, rng=1), nn.Softmax())
    predict = cr.compile(lambda x: model(x))
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal((4, 3)).astype(np.float32)
        with cr.no_grad():
            expected = model(x).data
        np.testing.assert_array_equal(predict(x).data, expected)
    assert predict.last_replay in ("numpy", "c")


def test_results_may_be_tuples_and_dicts_of_tensors():
    compiled = cr.compile(lambda x: {"double": x * 2.0, "pair": (x + 1.0, None)})
    for n in (2, 2):
        out = compiled(cr.tensor(np.arange(n, dtype=np.float64)))
    np.testing.assert_array_equal(out["double"].data, [0.0, 2.0])
    np.testing.assert_array_equal(out["pair"][0].data, [1.0, 2.0])
    assert out["pair"][1] is None


def test_compile_is_a_decorator_with_or_without_options():
    @cr.compile
    def plain(x):
        return cr.tensor(x) * 3.0

    @cr.compile(backend="python", cache_size=1)
    def configured(x):
        return cr.tensor(x) * 3.0

    for function in (plain, configured):
        assert function(np.ones(1)).item() == 3.0
        assert function(np.ones(1)).item() == 3.0
    assert configured.last_replay == "python"


# ---- refusals ----------------------------------------------------------------------------------
def _reads(read):
    model = nn.Linear(2, 1, dtype=np.float64, rng=0)

    def step(x):
        out = model(x).sum()
        read(out)
        return out

    return step


@pytest.mark.parametrize(
    ("read", "what"),
    [
        (lambda t: t.item(), r"\.item\(\)"),
        (lambda t: float(t), r"float\(\)"),
        (lambda t: bool(t > 0), r"bool\(\)"),
        (lambda t: t.numpy(), r"\.numpy\(\)"),
        (lambda t: t.tolist(), r"\.tolist\(\)"),
        (lambda t: np.asarray(t), r"np\.asarray"),
    ],
    ids=["item", "float", "if", "numpy", "tolist", "asarray"],
)
def test_reading_a_value_in_python_while_tracing_is_refused_with_what_to_change(read, what):
    compiled = cr.compile(_reads(read))
    with pytest.raises(cr.CompileError, match=what) as error:
        compiled(np.ones((1, 2)))
    assert "read it after the call" in str(error.value)
    assert cr.tensor(1.0).item() == 1.0  # the trace ended: reads work again


def test_creating_parameters_while_tracing_is_refused():
    compiled = cr.compile(lambda x: nn.Linear(2, 1)(x))
    with pytest.raises(cr.CompileError, match="before the compiled function"):
        compiled(np.ones((1, 2)))


def test_returning_a_python_number_is_refused():
    compiled = cr.compile(lambda x: 3)
    with pytest.raises(cr.CompileError, match="must return tensors"):
        compiled(np.ones(1))


def test_a_compiled_function_inside_a_trace_is_refused():
    inner = cr.compile(lambda x: x * 2.0)
    outer = cr.compile(lambda x: inner(x) + 1.0)
    with pytest.raises(cr.CompileError, match="inside another"):
        outer(np.ones(1))


def test_comparisons_are_replayed_not_frozen():
    compiled = cr.compile(lambda x: cr.where(x > 0.0, x, x * 0.5))
    for values in ([1.0, -2.0], [-1.0, 2.0]):
        x = cr.tensor(np.array(values))
        np.testing.assert_array_equal(compiled(x).data, np.where(x.data > 0, x.data, x.data * 0.5))


# ---- the replays agree with each other ---------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_replay_uses_its_kernels_for_an_mlp_and_matches_the_reference_replay(dtype):
    results = {}
    for backend in ("python", "numpy"):
        model, opt = mlp(dtype, nn.ReLU(), outputs=4, optimizer=optim.Adam, lr=0.01)(
            np.random.default_rng(0)
        )
        compiled = cr.compile(training_step(model, opt, F.cross_entropy), backend=backend)
        for x, y in class_batches(dtype, steps=20):
            compiled(x, y)
        results[backend] = [p.data.copy() for p in model.parameters()]
    for a, b in zip(results["python"], results["numpy"]):
        assert_close(a, b, dtype)


NATIVE_CASES = {
    "xor_sgd": (mlp(np.float64, nn.Sigmoid(), lr=0.5), F.mse_loss, regression_batches),
    "relu_adam_ce": (
        mlp(np.float32, nn.ReLU(), outputs=4, optimizer=optim.Adam, lr=0.01),
        F.cross_entropy,
        class_batches,
    ),
    "tanh_nesterov": (
        mlp(np.float64, nn.Tanh(), optimizer=optim.SGD, lr=0.1, momentum=0.9, nesterov=True),
        F.mse_loss,
        regression_batches,
    ),
    "amsgrad_adamw_dropout": (
        mlp(
            np.float32,
            nn.ReLU(),
            nn.Dropout(0.2, rng=3),
            outputs=4,
            optimizer=optim.AdamW,
            lr=0.01,
            amsgrad=True,
        ),
        F.cross_entropy,
        class_batches,
    ),
}


@pytest.mark.skipif(kernels.replay is None, reason="the C interpreter was not built")
@pytest.mark.parametrize("case", list(NATIVE_CASES))
def test_the_c_interpreter_runs_small_steps_and_agrees_with_the_numpy_replay(case):
    assert_c_agrees_with_numpy(case)


def assert_c_agrees_with_numpy(case):
    """30 steps of a NATIVE_CASES network in the C and in the NumPy replay: equal to rounding."""
    build, loss_function, batches = NATIVE_CASES[case]
    dtype = next(build(np.random.default_rng(0))[0].parameters()).dtype.type
    results = {}
    for backend in ("numpy", "c"):
        model, opt = build(np.random.default_rng(0))
        compiled = cr.compile(training_step(model, opt, loss_function), backend=backend)
        losses = [compiled(x, y).item() for x, y in batches(dtype, steps=30)]
        assert compiled.last_replay == backend
        results[backend] = (losses, [p.data.copy() for p in model.parameters()])
    assert_close(results["c"][0], results["numpy"][0], dtype)
    for a, b in zip(results["c"][1], results["numpy"][1]):
        assert_close(a, b, dtype)


def test_steps_the_c_interpreter_does_not_cover_replay_in_numpy():
    build = mlp(np.float64, nn.LayerNorm(5, dtype=np.float64), optimizer=optim.RMSprop)
    compiled = run_both(build, F.mse_loss, regression_batches(np.float64), np.float64, "c")
    assert compiled.last_replay == "numpy"


@pytest.mark.skipif(kernels.replay is None, reason="the C interpreter was not built")
def test_a_class_label_out_of_range_is_an_error_in_every_replay():
    model, opt = mlp(np.float64, nn.ReLU(), outputs=4)(np.random.default_rng(0))
    compiled = cr.compile(training_step(model, opt, F.cross_entropy))
    x = np.ones((3, 3))
    compiled(x, np.array([0, 1, 2]))
    for labels in ([0, 1, 4], [0, -1, 2]):
        with pytest.raises(ValueError, match="target class"):
            compiled(x, np.array(labels))


def test_switching_momentum_on_after_the_trace_replays_correctly():
    def switch(i, *optimizers):
        if i == 3:
            for opt in optimizers:
                opt.param_groups[0]["momentum"] = 0.9

    build = mlp(np.float64, nn.Tanh(), optimizer=optim.SGD, lr=0.1)
    run_both(build, F.mse_loss, regression_batches(np.float64), np.float64, "auto", switch)


def test_other_threads_are_not_traced_and_may_read_values():
    import threading

    model = nn.Linear(2, 1, dtype=np.float64, rng=0)
    seen = []

    def elsewhere():
        out = model(np.ones((1, 2)))  # eager, in another thread, while the step is traced
        seen.append(out.item())

    def step(x):
        worker = threading.Thread(target=elsewhere)
        worker.start()
        worker.join()
        return model(x)

    compiled = cr.compile(step)
    for _ in range(2):
        x = np.random.default_rng(0).standard_normal((3, 2))
        with cr.no_grad():
            np.testing.assert_array_equal(compiled(x).data, model(x).data)
    assert len(seen) == 1  # the replay does not run the other thread's work


@pytest.mark.parametrize("backend", ["python", "numpy"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_python_and_numpy_replays_give_the_eager_numbers_bit_for_bit(backend, dtype):
    (model_a, opt_a), (model_b, opt_b) = twins(
        mlp(dtype, nn.ReLU(), nn.Sigmoid(), outputs=4, optimizer=optim.Adam, lr=0.01)
    )
    eager = training_step(model_a, opt_a, F.cross_entropy)
    compiled = cr.compile(training_step(model_b, opt_b, F.cross_entropy), backend=backend)
    for x, y in class_batches(dtype, n=70, steps=10):  # 70 rows: the bias gradient's BLAS branch
        np.testing.assert_array_equal(compiled(x, y).data, eager(x, y).data)
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        np.testing.assert_array_equal(q.data, p.data)
        np.testing.assert_array_equal(q.grad, p.grad)
    program = compiled._cache[next(iter(compiled._cache))][0]
    assert (program.kernel_ops > 0) == (backend == "numpy")


def test_an_argument_sliced_outside_the_ops_is_refused():
    compiled = cr.compile(lambda x: cr.tensor(x[:, :1]) * 2.0)
    with pytest.raises(cr.CompileError, match="sliced or reshaped outside"):
        compiled(np.ones((2, 2)))


def test_a_conversion_that_could_come_from_two_arguments_is_refused():
    model = nn.Linear(2, 1, dtype=np.float32, rng=0)
    compiled = cr.compile(lambda a, b: model(a) + model(b))
    with pytest.raises(cr.CompileError, match="several arguments hold the same values"):
        compiled(np.ones((1, 2)), np.ones((1, 2)))


def test_the_same_array_passed_twice_is_converted_once_per_use():
    model = nn.Linear(2, 1, dtype=np.float32, rng=0)
    compiled = cr.compile(lambda a, b: model(a) + model(b))
    for values in ([1.0, 2.0], [3.0, -1.0]):
        x = np.array([values])
        with cr.no_grad():
            expected = (model(x) + model(x)).data
        np.testing.assert_array_equal(compiled(x, x).data, expected)


@pytest.mark.skipif(kernels.replay is None, reason="the C interpreter was not built")
def test_the_c_replay_takes_non_contiguous_arguments():
    model, opt = mlp(np.float64, nn.Tanh())(np.random.default_rng(0))
    twin, twin_opt = mlp(np.float64, nn.Tanh())(np.random.default_rng(0))
    compiled = cr.compile(training_step(model, opt, F.mse_loss))
    eager = training_step(twin, twin_opt, F.mse_loss)
    for x, y in regression_batches(np.float64, steps=4):
        wide = np.asfortranarray(x)
        assert_close(compiled(wide, y).data, eager(x, y).data, np.float64)
    assert compiled.last_replay == "c"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_layer_used_twice_accumulates_both_gradients_as_in_eager(backend):
    def build(rng):
        shared = nn.Linear(3, 3, dtype=np.float64, rng=rng)
        model = nn.Sequential(shared, nn.Tanh(), shared, nn.Linear(3, 1, dtype=np.float64, rng=rng))
        return model, optim.SGD(model.parameters(), lr=0.1, momentum=0.5)

    run_both(build, F.mse_loss, regression_batches(np.float64), np.float64, backend)


def test_a_gradient_into_an_argument_is_refused():
    model = nn.Linear(2, 1, dtype=np.float64, rng=0)

    def input_gradient(x):
        model(x).sum().backward()
        return x

    compiled = cr.compile(input_gradient)
    with pytest.raises(cr.CompileError, match="with respect to one of its arguments"):
        compiled(cr.tensor(np.ones((1, 2)), requires_grad=True))


def test_image_layers_compiled_equal_eager_running_statistics_and_masks_included():
    """BatchNorm2d takes each replay's batch statistics and updates its running estimates;
    Dropout2d draws new channel masks from the same generator, as eager does."""

    def build():
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding="same", dtype=np.float64, rng=0),
            nn.BatchNorm2d(4, dtype=np.float64),
            nn.ReLU(),
            nn.Dropout2d(0.5, rng=1),
            nn.Flatten(),
            nn.Linear(4 * 6 * 6, 3, dtype=np.float64, rng=2),
        )

    X = np.random.default_rng(0).normal(size=(8, 1, 6, 6))
    y = np.arange(8) % 3
    runs = []
    for compiled in (False, True):
        model = build()
        sgd = optim.SGD(model.parameters(), lr=0.1)

        def step(x, t, model=model, sgd=sgd):
            sgd.zero_grad()
            loss = F.cross_entropy(model(x), t)
            loss.backward()
            sgd.step()
            return loss

        run = cr.compile(step) if compiled else step
        losses = [run(X, y).item() for _ in range(6)]
        model.eval()
        runs.append(
            (losses, model[1].running_mean.copy(), model[1].running_var.copy(), model(X).data)
        )
    for eager, replayed in zip(*runs):
        np.testing.assert_allclose(replayed, eager, rtol=1e-12, atol=1e-14)


# ---- results as views, and many steps in one call ---------------------------------------------
def test_views_are_the_replays_own_arrays_holding_the_tensor_results_numbers():
    build = mlp(np.float64, nn.Tanh(), outputs=2)
    (model_a, opt_a), (model_b, opt_b) = twins(build)

    def step_of(model, opt):
        def step(x, y):
            opt.zero_grad()
            output = model(x)
            loss = F.cross_entropy(output, y)
            loss.backward()
            opt.step()
            return loss, output

        return step

    tensors = cr.compile(step_of(model_a, opt_a))
    views = cr.compile(step_of(model_b, opt_b), results="views")
    kept = []
    for x, y in class_batches(np.float64, classes=2, steps=6):
        (loss_a, out_a), (loss_b, out_b) = tensors(x, y), views(x, y)
        assert isinstance(loss_b, np.ndarray) and isinstance(out_b, np.ndarray)
        np.testing.assert_array_equal(loss_b, loss_a.data)
        np.testing.assert_array_equal(out_b, out_a.data)
        kept.append(out_b)
    if views.last_replay == "c":  # the C replay hands back the same buffers at every call
        assert kept[-1] is kept[-2]


def test_results_must_be_tensors_or_views():
    with pytest.raises(ValueError, match="results must be one of tensors, views"):
        cr.compile(lambda x: x, results="arrays")


SCAN_CASES = {k: NATIVE_CASES[k] for k in ("xor_sgd", "relu_adam_ce", "amsgrad_adamw_dropout")}


@pytest.mark.parametrize("backend", ["numpy", "auto"])
@pytest.mark.parametrize("case", list(SCAN_CASES))
def test_scan_gives_the_numbers_of_one_call_per_batch(case, backend):
    build, loss_function, batches = SCAN_CASES[case]
    dtype = next(build(np.random.default_rng(0))[0].parameters()).dtype.type
    data = batches(dtype, steps=10)
    X = np.concatenate([x for x, _ in data] + [data[0][0][:3]])  # 3 rows past the last batch
    y = np.concatenate([y for _, y in data] + [data[0][1][:3]])
    (model_a, opt_a), (model_b, opt_b) = twins(build)
    looped = cr.compile(training_step(model_a, opt_a, loss_function), backend=backend)
    scanned = cr.compile(training_step(model_b, opt_b, loss_function), backend=backend)
    expected = [looped(x, y).item() for _ in range(2) for x, y in data]
    got = [*scanned.scan(X, y, batch_size=8).data, *scanned.scan(X, y, batch_size=8).data]
    np.testing.assert_array_equal(got, expected)
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        np.testing.assert_array_equal(q.data, p.data)
        np.testing.assert_array_equal(q.grad, p.grad)
    runs_in_c = backend == "auto" and kernels.replay_scan is not None and "dropout" not in case
    assert (scanned.cache_info()["scans"] == 2) == runs_in_c


def test_scan_repeats_one_batch_as_many_times_as_asked():
    build = mlp(np.float64, nn.Sigmoid(), lr=0.5)
    (model_a, opt_a), (model_b, opt_b) = twins(build)
    x, y = regression_batches(np.float64, steps=1)[0]
    looped = cr.compile(training_step(model_a, opt_a, F.mse_loss))
    scanned = cr.compile(training_step(model_b, opt_b, F.mse_loss), results="views")
    expected = [looped(x, y).item() for _ in range(50)]
    got = scanned.scan(x, y, batch_size=len(x), repeat=50)
    assert got.shape == (50,)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(model_b[0].weight.data, model_a[0].weight.data)


def test_scan_stacks_tuples_of_results():
    double = cr.compile(lambda x: (cr.tensor(x) * 2.0, cr.tensor(x).sum()))
    twice, sums = double.scan(np.arange(6.0).reshape(3, 2), batch_size=1)
    assert twice.shape == (3, 1, 2) and sums.tolist() == [1.0, 5.0, 9.0]


@pytest.mark.parametrize(
    "arrays, options, error",
    [
        ((np.ones(4),), {"batch_size": 0}, "batch_size must be a positive int"),
        ((np.ones(4),), {"batch_size": 5}, "batch_size 5 is larger than the 4 rows"),
        ((np.ones(4),), {"batch_size": 2, "repeat": 0}, "repeat must be a positive int"),
        ((np.ones(4), np.ones(3)), {"batch_size": 2}, "as many rows each, got 4, 3"),
        (([1.0, 2.0],), {"batch_size": 1}, "NumPy arrays with a batch axis"),
    ],
)
def test_scan_names_what_is_wrong_with_its_arguments(arrays, options, error):
    double = cr.compile(lambda *xs: cr.tensor(xs[0]) * 2.0)
    with pytest.raises((ValueError, TypeError), match=error):
        double.scan(*arrays, **options)


@pytest.mark.skipif(kernels.replay_at is None, reason="the C interpreter was not built")
@pytest.mark.parametrize("case", list(NATIVE_CASES))
def test_layers_too_large_for_the_interpreters_loops_pause_it_for_blas(monkeypatch, case):
    from chainrule.compile import native

    monkeypatch.setattr(native, "MAX_LINEAR_WORK", 0)  # every layer's products by BLAS
    assert_c_agrees_with_numpy(case)


@pytest.mark.skipif(kernels.replay_at is None, reason="the C interpreter was not built")
def test_a_step_that_pauses_for_blas_scans_one_call_per_batch(monkeypatch):
    from chainrule.compile import native

    monkeypatch.setattr(native, "MAX_LINEAR_WORK", 0)  # every layer pauses for BLAS
    build, loss_function, batches = SCAN_CASES["relu_adam_ce"]
    (model_a, opt_a), (model_b, opt_b) = twins(build)
    data = batches(np.float32, steps=4)
    X, y = np.concatenate([x for x, _ in data]), np.concatenate([y for _, y in data])
    looped = cr.compile(training_step(model_a, opt_a, loss_function))
    scanned = cr.compile(training_step(model_b, opt_b, loss_function))
    expected = [looped(x, y).item() for x, y in data]
    assert looped.last_replay == "c"
    np.testing.assert_array_equal(scanned.scan(X, y, batch_size=8).data, expected)
    assert scanned.cache_info()["scans"] == 0
