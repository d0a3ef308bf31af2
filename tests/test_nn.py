"""chainrule.nn against torch.nn (values, every gradient) and finite differences; the Module API."""

import re

import numpy as np
import pytest
import torch

import chainrule as cr
import chainrule.optim
from chainrule import nn
from chainrule.nn import init

F64 = np.float64
TORCH_F64 = torch.float64
D64, T64 = {"dtype": F64}, {"dtype": TORCH_F64}  # float64 layers, ours and theirs
TNN = torch.nn  # torch's layers, beside ours in the tables


def away_from_zero(rng, shape, margin=0.1):
    """Values in ±[margin, 2]: keeps ReLU-like samples off their kinks."""
    return rng.uniform(margin, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


# ---- helpers: the same float64 weights in both libraries ---------------------------------------
def randomize_parameters(module, rng):
    """Replace default weights (BatchNorm's ones and zeros) by random ones, so every term counts."""
    for parameter in module.parameters():
        init.normal_(parameter, 0.0, 1.0, rng=rng)


def copy_parameters_to_torch(ours, theirs):
    their_parameters = dict(theirs.named_parameters())
    assert [name for name, _ in ours.named_parameters()] == list(their_parameters)
    with torch.no_grad():
        for name, parameter in ours.named_parameters():
            their_parameters[name].copy_(torch.tensor(parameter.data))


def assert_layer_matches_torch(ours, theirs, x, seed=0, rtol=1e-7, atol=1e-10):
    """Forward values, the input's gradient and every parameter's gradient agree with torch."""
    copy_parameters_to_torch(ours, theirs)
    x_ours = cr.tensor(x.copy(), requires_grad=True)
    x_theirs = torch.tensor(x.copy(), requires_grad=True)
    out, expected = ours(x_ours), theirs(x_theirs)
    assert out.dtype == F64
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=rtol, atol=atol)
    upstream = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(upstream)
    expected.backward(torch.tensor(upstream))
    np.testing.assert_allclose(x_ours.grad, x_theirs.grad.numpy(), rtol=rtol, atol=atol)
    their_parameters = dict(theirs.named_parameters())
    for name, parameter in ours.named_parameters():
        expected_grad = their_parameters[name].grad.numpy()
        np.testing.assert_allclose(
            parameter.grad, expected_grad, rtol=rtol, atol=atol, err_msg=name
        )


def gradcheck_layer(module, x):
    """Finite differences for the input and every parameter of a single layer.

    The parameters are passed to `gradcheck` as inputs: for one call the layer's attributes are
    swapped for gradcheck's float64 leaves, then restored.
    """
    names = [name for name, _ in module.named_parameters()]

    def run(x, *values):
        saved = {name: getattr(module, name) for name in names}
        for name, value in zip(names, values):
            setattr(module, name, value)
        try:
            return module(x)
        finally:
            for name, value in saved.items():
                setattr(module, name, value)

    return cr.gradcheck(run, x, *[getattr(module, name).data for name in names])


# (name, our layer, torch's layer, input shape). Our layers are float64 so rtol 1e-7 is meaningful.
LAYERS = [
    ("linear", lambda: nn.Linear(3, 5, **D64), lambda: TNN.Linear(3, 5, **T64), (4, 3)),
    (
        "linear_no_bias",
        lambda: nn.Linear(3, 5, bias=False, **D64),
        lambda: TNN.Linear(3, 5, bias=False, **T64),
        (4, 3),
    ),
    (
        "linear_leading_dims",
        lambda: nn.Linear(3, 5, **D64),
        lambda: TNN.Linear(3, 5, **T64),
        (2, 4, 3),
    ),
    ("sigmoid", nn.Sigmoid, TNN.Sigmoid, (4, 3)),
    ("tanh", nn.Tanh, TNN.Tanh, (4, 3)),
    ("relu", nn.ReLU, TNN.ReLU, (4, 3)),
    ("leaky_relu", lambda: nn.LeakyReLU(0.2), lambda: TNN.LeakyReLU(0.2), (4, 3)),
    ("gelu", nn.GELU, TNN.GELU, (4, 3)),
    ("gelu_tanh", lambda: nn.GELU("tanh"), lambda: TNN.GELU(approximate="tanh"), (4, 3)),
    ("softmax", nn.Softmax, lambda: TNN.Softmax(dim=-1), (4, 3)),
    ("softmax_dim0", lambda: nn.Softmax(dim=0), lambda: TNN.Softmax(dim=0), (4, 3)),
    ("softplus", nn.Softplus, TNN.Softplus, (4, 3)),
    ("identity", nn.Identity, TNN.Identity, (4, 3)),
    ("flatten", nn.Flatten, TNN.Flatten, (2, 3, 4)),
    (
        "batchnorm_train",
        lambda: nn.BatchNorm1d(3, **D64),
        lambda: TNN.BatchNorm1d(3, **T64),
        (6, 3),
    ),
    ("layernorm", lambda: nn.LayerNorm(3, **D64), lambda: TNN.LayerNorm(3, **T64), (4, 3)),
    (
        "layernorm_no_affine",
        lambda: nn.LayerNorm(3, elementwise_affine=False, **D64),
        lambda: TNN.LayerNorm(3, elementwise_affine=False, **T64),
        (4, 3),
    ),
    (
        "layernorm_2d",
        lambda: nn.LayerNorm((3, 4), **D64),
        lambda: TNN.LayerNorm((3, 4), **T64),
        (2, 3, 4),
    ),
]
LAYER_IDS = [row[0] for row in LAYERS]


@pytest.mark.parametrize("name, ours, theirs, shape", LAYERS, ids=LAYER_IDS)
def test_layer_matches_torch(name, ours, theirs, shape, rng):
    layer = ours()
    randomize_parameters(layer, rng)
    assert_layer_matches_torch(layer, theirs(), away_from_zero(rng, shape))


@pytest.mark.parametrize("name, ours, theirs, shape", LAYERS, ids=LAYER_IDS)
def test_layer_matches_finite_differences(name, ours, theirs, shape, rng):
    layer = ours()
    randomize_parameters(layer, rng)
    assert gradcheck_layer(layer, away_from_zero(rng, shape))


class DetachedScale(nn.Module):
    """x·w with w's gradient hidden from backward: a deliberately wrong layer."""

    def __init__(self):
        self.weight = nn.Parameter(np.full(3, 2.0))

    def forward(self, x):
        return x * cr.tensor(self.weight.data)


def test_gradcheck_layer_catches_a_wrong_parameter_gradient(rng):
    with pytest.raises(cr.GradcheckError, match="input 1"):
        gradcheck_layer(DetachedScale(), rng.standard_normal((4, 3)))


# ---- Dropout -----------------------------------------------------------------------------
def test_dropout_in_eval_mode_is_identity(rng):
    x = rng.standard_normal((4, 5))
    dropout = nn.Dropout(0.5, rng=0).eval()
    np.testing.assert_array_equal(dropout(x).data, x)


def test_dropout_with_p_zero_is_identity_while_training(rng):
    x = rng.standard_normal((4, 5))
    np.testing.assert_array_equal(nn.Dropout(0.0, rng=0)(x).data, x)


@pytest.mark.parametrize(
    "make_rng", [lambda: 7, lambda: np.random.default_rng(7)], ids=["seed", "generator"]
)
def test_dropout_mask_is_reproducible_from_the_rng(make_rng):
    x = np.ones((8, 16))
    first, second = nn.Dropout(0.5, rng=make_rng()), nn.Dropout(0.5, rng=make_rng())
    np.testing.assert_array_equal(first(x).data, second(x).data)


def test_dropout_draws_a_new_mask_each_call():
    dropout = nn.Dropout(0.5, rng=7)
    x = np.ones((8, 16))
    assert not np.array_equal(dropout(x).data, dropout(x).data)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_zeroes_a_fraction_p_and_scales_the_rest_by_one_over_one_minus_p(p):
    x = np.full(200_000, 3.0)
    out = nn.Dropout(p, rng=1)(x).data
    kept = out != 0
    np.testing.assert_allclose(out[kept], 3.0 / (1 - p), rtol=1e-12)
    assert abs(kept.mean() - (1 - p)) < 0.005
    assert abs(out.mean() - 3.0) < 0.05  # the expected value is unchanged


def test_dropout_gradient_is_its_mask():
    x = cr.tensor(np.ones((6, 7)), requires_grad=True)
    out = nn.Dropout(0.4, rng=2)(x)
    out.backward(np.ones(out.shape))
    np.testing.assert_array_equal(x.grad, out.data)  # x = 1, so out is the scaled mask itself


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_probability_outside_zero_to_one(p):
    with pytest.raises(ValueError, match=re.escape(str(p))):
        nn.Dropout(p)


# ---- BatchNorm1d -------------------------------------------------------------------------
def train_both_batchnorms(rng, batches, momentum=0.1):
    ours = nn.BatchNorm1d(3, momentum=momentum, dtype=F64)
    theirs = TNN.BatchNorm1d(3, momentum=momentum, dtype=TORCH_F64)
    randomize_parameters(ours, rng)
    copy_parameters_to_torch(ours, theirs)
    for _ in range(batches):
        x = rng.standard_normal((5, 3)) * 2 + 1
        ours(x)
        theirs(torch.tensor(x))
    return ours, theirs


@pytest.mark.parametrize("momentum", [0.1, 0.5])
def test_batchnorm_running_statistics_after_several_batches_equal_torch(momentum, rng):
    ours, theirs = train_both_batchnorms(rng, batches=4, momentum=momentum)
    np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), rtol=1e-7)
    np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-7)


def test_batchnorm_in_eval_mode_uses_running_statistics_like_torch(rng):
    ours, theirs = train_both_batchnorms(rng, batches=3)
    ours.eval()
    theirs.eval()
    assert_layer_matches_torch(ours, theirs, rng.standard_normal((4, 3)))


def test_batchnorm_eval_does_not_change_running_statistics(rng):
    ours, _ = train_both_batchnorms(rng, batches=2)
    before = ours.state_dict()
    ours.eval()(rng.standard_normal((4, 3)))
    for name, value in ours.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_batchnorm_eval_matches_finite_differences(rng):
    ours, _ = train_both_batchnorms(rng, batches=2)
    assert gradcheck_layer(ours.eval(), rng.standard_normal((4, 3)))


# ---- a whole network ---------------------------------------------------------------------
def test_mlp_trained_for_k_sgd_steps_matches_torch(rng):
    ours = nn.Sequential(
        nn.Linear(4, 8, dtype=F64, rng=rng),
        nn.LayerNorm(8, dtype=F64),
        nn.Tanh(),
        nn.Linear(8, 8, dtype=F64, rng=rng),
        nn.ReLU(),
        nn.Linear(8, 3, dtype=F64, rng=rng),
    )
    theirs = TNN.Sequential(
        TNN.Linear(4, 8, **T64),
        TNN.LayerNorm(8, **T64),
        TNN.Tanh(),
        TNN.Linear(8, 8, **T64),
        TNN.ReLU(),
        TNN.Linear(8, 3, **T64),
    )
    theirs.load_state_dict({name: torch.tensor(value) for name, value in ours.state_dict().items()})
    our_optimizer = cr.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    their_optimizer = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    for _ in range(5):
        x, y = rng.standard_normal((16, 4)), rng.integers(0, 3, 16)
        our_loss = nn.CrossEntropyLoss()(ours(x), y)
        our_optimizer.zero_grad()
        our_loss.backward()
        our_optimizer.step()
        their_loss = torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y))
        their_optimizer.zero_grad()
        their_loss.backward()
        their_optimizer.step()
        np.testing.assert_allclose(our_loss.item(), their_loss.item(), rtol=1e-7)
    their_state = theirs.state_dict()
    for name, value in ours.state_dict().items():
        np.testing.assert_allclose(
            value, their_state[name].numpy(), rtol=1e-7, atol=1e-12, err_msg=name
        )


# ---- Module API --------------------------------------------------------------------------
class OurNet(nn.Module):
    def __init__(self):
        self.fc1 = nn.Linear(3, 4)
        self.norm = nn.BatchNorm1d(4)
        self.body = nn.Sequential(nn.ReLU(), nn.Linear(4, 2, bias=False), nn.LayerNorm(2))

    def forward(self, x):
        return self.body(self.norm(self.fc1(x)))


class TheirNet(TNN.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = TNN.Linear(3, 4)
        self.norm = TNN.BatchNorm1d(4)
        self.body = TNN.Sequential(TNN.ReLU(), TNN.Linear(4, 2, bias=False), TNN.LayerNorm(2))


def make_sequentials():
    ours = nn.Sequential(
        nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2, bias=False), nn.LayerNorm(2)
    )
    theirs = TNN.Sequential(
        TNN.Linear(3, 4),
        TNN.BatchNorm1d(4),
        TNN.ReLU(),
        TNN.Linear(4, 2, bias=False),
        TNN.LayerNorm(2),
    )
    return ours, theirs


@pytest.mark.parametrize(
    "make", [make_sequentials, lambda: (OurNet(), TheirNet())], ids=["sequential", "custom"]
)
def test_parameter_names_match_torch(make):
    ours, theirs = make()
    assert [name for name, _ in ours.named_parameters()] == [
        name for name, _ in theirs.named_parameters()
    ]


@pytest.mark.parametrize(
    "make", [make_sequentials, lambda: (OurNet(), TheirNet())], ids=["sequential", "custom"]
)
def test_buffer_names_match_torch(make):
    ours, theirs = make()
    their_names = [
        name for name, _ in theirs.named_buffers() if not name.endswith("num_batches_tracked")
    ]
    assert [name for name, _ in ours.named_buffers()] == their_names


@pytest.mark.parametrize(
    "make", [make_sequentials, lambda: (OurNet(), TheirNet())], ids=["sequential", "custom"]
)
def test_parameter_shapes_match_torch(make):
    ours, theirs = make()
    assert [p.shape for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]


def test_children_modules_and_parameters_are_found_in_order():
    first, relu, inner_linear, tanh = nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.Tanh()
    inner = nn.Sequential(inner_linear, tanh)
    model = nn.Sequential(first, relu, inner)
    assert list(model.children()) == [first, relu, inner]
    assert list(model.modules()) == [model, first, relu, inner, inner_linear, tanh]
    expected = [first.weight, first.bias, inner_linear.weight, inner_linear.bias]
    assert [id(p) for p in model.parameters()] == [id(p) for p in expected]


def test_a_layer_used_twice_contributes_its_parameters_once():
    shared = nn.Linear(3, 3)
    ours = nn.Sequential(shared, nn.Tanh(), shared)
    torch_shared = TNN.Linear(3, 3)
    theirs = TNN.Sequential(torch_shared, TNN.Tanh(), torch_shared)
    assert [name for name, _ in ours.named_parameters()] == [
        name for name, _ in theirs.named_parameters()
    ]


def test_train_and_eval_reach_every_nested_module():
    model = nn.Sequential(
        nn.Linear(3, 4), nn.Sequential(nn.Dropout(0.5), nn.BatchNorm1d(4)), nn.ReLU()
    )
    assert model.eval() is model
    assert not any(module.training for module in model.modules())
    assert model.train() is model
    assert all(module.training for module in model.modules())


def test_eval_turns_off_a_nested_dropout(rng):
    model = nn.Sequential(nn.Identity(), nn.Sequential(nn.Dropout(0.9, rng=0)))
    x = rng.standard_normal((4, 5))
    np.testing.assert_array_equal(model.eval()(x).data, x)


def test_zero_grad_clears_every_parameter_gradient(rng):
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    model(rng.standard_normal((5, 3))).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def make_model(seed):
    """A model with parameters and buffers; one training batch moves the buffers off defaults."""
    model = nn.Sequential(
        nn.Linear(3, 4, rng=seed), nn.BatchNorm1d(4), nn.Linear(4, 2, rng=seed + 1)
    )
    model(np.random.default_rng(seed).standard_normal((8, 3)))
    return model


def test_state_dict_round_trip_restores_every_value(rng):
    source, target = make_model(0), make_model(1)
    target.load_state_dict(source.state_dict())
    restored = target.state_dict()
    assert list(restored) == list(source.state_dict())
    for name, value in source.state_dict().items():
        np.testing.assert_array_equal(restored[name], value, err_msg=name)
    x = rng.standard_normal((4, 3))
    np.testing.assert_array_equal(target.eval()(x).data, source.eval()(x).data)


def test_state_dict_holds_copies(rng):
    model = make_model(0)
    state = model.state_dict()
    state["0.weight"][...] = 99.0
    state["1.running_mean"][...] = 99.0
    assert not np.any(model[0].weight.data == 99.0)
    assert not np.any(model[1].running_mean == 99.0)


def test_load_state_dict_keeps_the_same_parameter_objects_and_arrays():
    model = make_model(0)
    before = [(p, p.data) for p in model.parameters()]
    model.load_state_dict(make_model(1).state_dict())
    after = [(p, p.data) for p in model.parameters()]
    assert all(p is q and a is b for (p, a), (q, b) in zip(before, after))
    np.testing.assert_array_equal(model[0].weight.data, make_model(1)[0].weight.data)


def _drop(state, name):
    del state[name]
    return state


def _add(state, name):
    state[name] = np.zeros(2, dtype=np.float32)
    return state


def _reshape(state, name):
    state[name] = np.zeros((2, 2), dtype=np.float32)
    return state


@pytest.mark.parametrize(
    "corrupt, name, error, fragments",
    [
        (_drop, "2.bias", KeyError, ["2.bias", "missing"]),
        (_drop, "1.running_var", KeyError, ["1.running_var", "missing"]),
        (_add, "extra.weight", KeyError, ["extra.weight", "unexpected"]),
        (_reshape, "2.weight", ValueError, ["2.weight", "(2, 2)", "(2, 4)"]),
    ],
    ids=["missing_parameter", "missing_buffer", "unexpected", "shape"],
)
def test_load_state_dict_errors_name_the_key(corrupt, name, error, fragments):
    model = make_model(0)
    with pytest.raises(error) as raised:
        model.load_state_dict(corrupt(make_model(1).state_dict(), name))
    for fragment in fragments:
        assert fragment in str(raised.value)


def test_load_state_dict_changes_nothing_when_a_later_entry_is_bad():
    model = make_model(0)
    before = model.state_dict()
    with pytest.raises(ValueError):
        model.load_state_dict(_reshape(make_model(1).state_dict(), "2.weight"))
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


@pytest.mark.parametrize(
    "convert, dtype",
    [
        (lambda m: m.to(np.float64), F64),
        (lambda m: m.double(), F64),
        (lambda m: m.double().float(), np.float32),
        (lambda m: m.to(np.float32), np.float32),
    ],
    ids=["to_float64", "double", "float", "to_float32"],
)
def test_to_converts_parameters_and_buffers(convert, dtype):
    model = make_model(0)
    parameters = list(model.parameters())
    assert convert(model) is model
    assert all(p is q for p, q in zip(parameters, model.parameters()))
    assert {value.dtype for value in model.state_dict().values()} == {np.dtype(dtype)}
    assert model(np.ones((2, 3), dtype=dtype)).dtype == dtype


@pytest.mark.parametrize("dtype", [F64, np.float32])
def test_to_converts_layernorm_without_affine(dtype):
    layer = nn.LayerNorm(4, elementwise_affine=False, dtype=np.float32 if dtype == F64 else F64)
    layer.to(dtype)
    assert layer(np.arange(8.0).reshape(2, 4)).dtype == dtype


def test_to_rejects_a_non_floating_dtype():
    with pytest.raises(TypeError, match="int32"):
        nn.Linear(2, 2).to(np.int32)


def test_repr_shows_layers_and_parameter_counts():
    text = repr(nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2), nn.Linear(100, 100)))
    assert "(0): Linear(in_features=3, out_features=5, bias=True)  # 20 parameters" in text
    assert "(1): ReLU()" in text
    assert "# 12 parameters" in text
    assert "# 10,100 parameters" in text
    assert "10,132 parameters in all" in text


def test_linear_given_the_wrong_number_of_features_names_layer_and_shape():
    with pytest.raises(ValueError) as raised:
        nn.Linear(3, 5)(np.zeros((2, 4)))
    assert "Linear(3, 5)" in str(raised.value)
    assert "(2, 4)" in str(raised.value)


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: nn.Linear(3, 5), (4, 3)),
        (lambda: nn.BatchNorm1d(3), (4, 3)),
        (lambda: nn.LayerNorm(3), (4, 3)),
        (lambda: nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2), nn.Softmax()), (4, 3)),
    ],
    ids=["linear", "batchnorm", "layernorm", "mlp"],
)
@pytest.mark.parametrize("as_input", [np.asarray, cr.tensor], ids=["array", "tensor"])
def test_float64_input_to_a_float32_layer_gives_float32_output_and_gradients(
    make, shape, as_input, rng
):
    layer = make()
    out = layer(as_input(rng.standard_normal(shape)))  # float64 in
    assert out.dtype == np.float32
    out.sum().backward()
    assert all(p.grad.dtype == np.float32 for p in layer.parameters())


# ---- initialisers ------------------------------------------------------------------------
def copy_into(parameter, source):
    parameter.data[...] = source.data


INITIALISERS = [
    ("uniform", lambda t, rng: init.uniform_(t, -1.0, 1.0, rng=rng)),
    ("normal", lambda t, rng: init.normal_(t, 0.0, 1.0, rng=rng)),
    ("xavier_uniform", lambda t, rng: init.xavier_uniform_(t, rng=rng)),
    ("xavier_normal", lambda t, rng: init.xavier_normal_(t, rng=rng)),
    ("kaiming_uniform", lambda t, rng: init.kaiming_uniform_(t, rng=rng)),
    ("kaiming_normal", lambda t, rng: init.kaiming_normal_(t, rng=rng)),
    ("linear", lambda t, rng: copy_into(t, nn.Linear(5, 4, rng=rng).weight)),
]
INIT_IDS = [row[0] for row in INITIALISERS]


@pytest.mark.parametrize("name, initialise", INITIALISERS, ids=INIT_IDS)
def test_initialiser_is_reproducible_from_a_seed(name, initialise):
    first, second, other = (nn.Parameter(np.zeros((4, 5))) for _ in range(3))
    initialise(first, 42)
    initialise(second, 42)
    initialise(other, 43)
    np.testing.assert_array_equal(first.data, second.data)
    assert not np.array_equal(first.data, other.data)


@pytest.mark.parametrize("rng_arg", [None, 3], ids=["default_generator", "seed"])
@pytest.mark.parametrize("name, initialise", INITIALISERS, ids=INIT_IDS)
def test_initialiser_never_touches_numpy_global_random_state(name, initialise, rng_arg):
    before = np.random.get_state()
    initialise(nn.Parameter(np.zeros((4, 5))), rng_arg)
    after = np.random.get_state()
    assert before[0] == after[0]
    np.testing.assert_array_equal(before[1], after[1])
    assert before[2:] == after[2:]


FAN_OUT, FAN_IN = 200, 300
TANH_GAIN = 5.0 / 3


GLOROT_STD = np.sqrt(2 / (FAN_IN + FAN_OUT))


def kaiming(initialise, **options):
    return lambda t: initialise(t, nonlinearity="relu", rng=0, **options)


# (name, initialiser, expected std, bound of a uniform or None). Weight shape (fan_out, fan_in).
INIT_STATISTICS = [
    (
        "xavier_uniform",
        lambda t: init.xavier_uniform_(t, rng=0),
        GLOROT_STD,
        np.sqrt(3) * GLOROT_STD,
    ),
    (
        "xavier_uniform_tanh_gain",
        lambda t: init.xavier_uniform_(t, gain=TANH_GAIN, rng=0),
        TANH_GAIN * GLOROT_STD,
        TANH_GAIN * np.sqrt(3) * GLOROT_STD,
    ),
    ("xavier_normal", lambda t: init.xavier_normal_(t, rng=0), GLOROT_STD, None),
    (
        "kaiming_uniform_relu",
        kaiming(init.kaiming_uniform_),
        np.sqrt(2 / FAN_IN),
        np.sqrt(6 / FAN_IN),
    ),
    (
        "kaiming_uniform_fan_out",
        kaiming(init.kaiming_uniform_, mode="fan_out"),
        np.sqrt(2 / FAN_OUT),
        np.sqrt(6 / FAN_OUT),
    ),
    # torch's default for Linear weights: leaky_relu with a = √5, gain √(2 / 6).
    (
        "kaiming_uniform_leaky_a",
        lambda t: init.kaiming_uniform_(t, a=np.sqrt(5), rng=0),
        np.sqrt(2 / 6) / np.sqrt(FAN_IN),
        np.sqrt(2 / 6) * np.sqrt(3 / FAN_IN),
    ),
    ("kaiming_normal_relu", kaiming(init.kaiming_normal_), np.sqrt(2 / FAN_IN), None),
    (
        "kaiming_normal_fan_out",
        kaiming(init.kaiming_normal_, mode="fan_out"),
        np.sqrt(2 / FAN_OUT),
        None,
    ),
]


@pytest.mark.parametrize(
    "name, initialise, std, bound", INIT_STATISTICS, ids=[row[0] for row in INIT_STATISTICS]
)
def test_initialiser_statistics_follow_the_formula(name, initialise, std, bound):
    weight = initialise(nn.Parameter(np.zeros((FAN_OUT, FAN_IN)))).data
    n = weight.size
    assert abs(weight.mean()) < 5 * std / np.sqrt(n)
    assert abs(weight.std() / std - 1) < 0.02  # the sample std's relative error is ~1/√(2n) ≈ 0.3%
    if bound is not None:
        assert np.abs(weight).max() <= bound
        assert np.abs(weight).max() > 0.9995 * bound  # the largest of 60,000 draws sits at the edge


def test_linear_initialisation_uses_torch_bounds():
    layer = nn.Linear(400, 300, rng=0)
    bound = 1 / np.sqrt(400)
    for parameter in layer.parameters():
        assert np.abs(parameter.data).max() <= bound
        assert np.abs(parameter.data).max() > 0.99 * bound


@pytest.mark.parametrize(
    "nonlinearity, param",
    [
        ("linear", None),
        ("sigmoid", None),
        ("tanh", None),
        ("relu", None),
        ("selu", None),
        ("leaky_relu", None),
        ("leaky_relu", 0.2),
        ("leaky_relu", np.sqrt(5)),
    ],
)
def test_calculate_gain_equals_torch(nonlinearity, param):
    expected = torch.nn.init.calculate_gain(nonlinearity, param)
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(expected, rel=1e-12)


def test_calculate_gain_lists_the_known_nonlinearities():
    with pytest.raises(ValueError) as raised:
        init.calculate_gain("swish")
    assert "'swish'" in str(raised.value)
    for known in ("linear", "relu", "tanh", "leaky_relu"):
        assert known in str(raised.value)


def test_fan_based_initialiser_rejects_a_vector_naming_its_shape():
    with pytest.raises(ValueError, match=re.escape("(5,)")):
        init.xavier_uniform_(nn.Parameter(np.zeros(5)))
