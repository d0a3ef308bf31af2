"""chainrule.optim against torch.optim: same start, same gradients, same parameters after k steps;
schedules give torch's lr sequence; state dicts survive safetensors + JSON and resume exactly.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

import chainrule as cr
from chainrule import nn, optim

SHAPES = [(3, 4), (4,), (2, 3, 2)]

CONFIGS = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.05, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.1, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("Adam", {}),
    ("Adam", {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.05, "amsgrad": True}),
    ("AdamW", {"lr": 0.05}),
    ("AdamW", {"lr": 0.05, "weight_decay": 0.1, "amsgrad": True}),
    ("RMSprop", {}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.01}),
    ("RMSprop", {"lr": 0.01, "alpha": 0.9, "centered": True}),
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5, "eps": 1e-4}),
    ("Adagrad", {"lr": 0.1}),
    (
        "Adagrad",
        {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1, "initial_accumulator_value": 0.5},
    ),
]
CONFIG_IDS = [
    f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}" for name, kw in CONFIGS
]


def starting_arrays(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]


_rng = np.random.default_rng(1)
_CURVATURES = [_rng.uniform(0.5, 2.0, shape) for shape in SHAPES]
_TARGETS = [_rng.standard_normal(shape) for shape in SHAPES]


def loss_gradient(i, p):
    """Gradient of Σ c(p − t)²/2 + p⁴/40: nonlinear, so a wrong step shows up in later steps."""
    c, t = _CURVATURES[i].astype(p.dtype), _TARGETS[i].astype(p.dtype)
    return c * (p - t) + 0.1 * p**3


def set_gradients(ours, theirs=()):
    for i, p in enumerate(ours):
        p.grad = loss_gradient(i, p.data)
    for i, p in enumerate(theirs):
        p.grad = torch.from_numpy(loss_gradient(i, p.detach().numpy()))


def make_pair(name, kwargs, arrays):
    ours = [nn.Parameter(a.copy()) for a in arrays]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    return (
        ours,
        getattr(optim, name)(ours, **kwargs),
        theirs,
        getattr(torch.optim, name)(theirs, **kwargs),
    )


def assert_same_parameters(ours, theirs, rtol=1e-10):
    for i, (mine, reference) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(
            mine.data, reference.detach().numpy(), rtol=rtol, atol=1e-14, err_msg=f"parameter {i}"
        )


# ---- update rules against torch.optim ---------------------------------------------------------
@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_steps_match_torch(name, kwargs):
    ours, opt, theirs, reference = make_pair(name, kwargs, starting_arrays())
    for _ in range(8):
        set_gradients(ours, theirs)
        opt.step()
        reference.step()
    assert_same_parameters(ours, theirs)


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS[::3], ids=CONFIG_IDS[::3])
def test_training_a_tiny_mlp_matches_torch(name, kwargs):
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((16, 3)), rng.standard_normal((16, 1))
    model = nn.Sequential(
        nn.Linear(3, 5, dtype=np.float64, rng=rng),
        nn.Tanh(),
        nn.Linear(5, 1, dtype=np.float64, rng=rng),
    )
    twin = torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)
    ).double()
    with torch.no_grad():
        for theirs, mine in zip(twin.parameters(), model.parameters()):
            theirs.copy_(torch.from_numpy(mine.data))
    opt = getattr(optim, name)(model.parameters(), **kwargs)
    reference = getattr(torch.optim, name)(twin.parameters(), **kwargs)
    for _ in range(10):
        opt.zero_grad()
        reference.zero_grad()
        cr.functional.mse_loss(model(x), y).backward()
        torch.nn.functional.mse_loss(twin(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
        reference.step()
    assert_same_parameters(list(model.parameters()), list(twin.parameters()))


def test_parameter_groups_use_their_own_options_like_torch():
    arrays = starting_arrays()
    ours = [nn.Parameter(a.copy()) for a in arrays]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    opt = optim.SGD(
        [{"params": ours[:2]}, {"params": ours[2:], "lr": 0.01, "nesterov": True}],
        lr=0.1,
        momentum=0.9,
    )
    reference = torch.optim.SGD(
        [{"params": theirs[:2]}, {"params": theirs[2:], "lr": 0.01, "nesterov": True}],
        lr=0.1,
        momentum=0.9,
    )
    for _ in range(5):
        set_gradients(ours, theirs)
        opt.step()
        reference.step()
    assert_same_parameters(ours, theirs)


def test_one_sgd_step_by_hand():
    # p − lr·g = [1, 2] − 0.1·[0.5, −1] = [0.95, 2.1]
    p = nn.Parameter(np.array([1.0, 2.0]))
    p.grad = np.array([0.5, -1.0])
    optim.SGD([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [0.95, 2.1], rtol=1e-15)


def test_step_returns_the_closure_loss():
    p = nn.Parameter(np.array([3.0]))

    def closure():
        p.grad = 2 * p.data
        return float(p.data[0] ** 2)

    assert optim.SGD([p], lr=0.25).step(closure) == 9.0
    assert p.data[0] == 1.5


# ---- what a step may and may not touch --------------------------------------------------------
@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_float32_parameters_and_state_stay_float32(name, kwargs):
    params = [nn.Parameter(a) for a in starting_arrays(np.float32)]
    opt = getattr(optim, name)(params, **kwargs)
    for _ in range(3):
        set_gradients(params)
        opt.step()
    assert all(p.data.dtype == np.float32 for p in params)
    arrays = [
        v
        for s in opt.state_dict()["state"].values()
        for v in s.values()
        if isinstance(v, np.ndarray)
    ]
    assert all(a.dtype == np.float32 for a in arrays)


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_float32_steps_match_torch_in_float32(name, kwargs):
    ours, opt, theirs, reference = make_pair(name, kwargs, starting_arrays(np.float32))
    for _ in range(8):
        set_gradients(ours, theirs)
        opt.step()
        reference.step()
    assert_same_parameters(ours, theirs, rtol=1e-5)


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_step_updates_parameters_in_place_and_leaves_gradients_alone(name, kwargs):
    params = [nn.Parameter(a) for a in starting_arrays()]
    opt = getattr(optim, name)(params, **kwargs)
    for _ in range(2):
        set_gradients(params)
        arrays = [p.data for p in params]
        before = [p.data.copy() for p in params]
        grads = [p.grad.copy() for p in params]
        opt.step()
        for p, array, old, grad in zip(params, arrays, before, grads):
            assert p.data is array
            assert not np.array_equal(p.data, old)
            np.testing.assert_array_equal(p.grad, grad)


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_parameters_without_gradient_are_skipped(name, kwargs):
    params = [nn.Parameter(a) for a in starting_arrays()]
    untouched = params[1].data.copy()
    opt = getattr(optim, name)(params, **kwargs)
    for _ in range(2):
        set_gradients(params)
        params[1].grad = None
        opt.step()
    np.testing.assert_array_equal(params[1].data, untouched)
    assert 1 not in opt.state_dict()["state"]


def test_zero_grad_sets_gradients_to_none():
    params = [nn.Parameter(a) for a in starting_arrays()]
    set_gradients(params)
    optim.Adam(params).zero_grad()
    assert all(p.grad is None for p in params)


# ---- state_dict ---------------------------------------------------------------------------------
def through_safetensors_and_json(state_dict):
    """Store a state dict as a checkpoint writer would: arrays in safetensors, the rest in JSON."""
    arrays, plain = {}, {"param_groups": state_dict["param_groups"], "state": {}}
    for index, state in state_dict["state"].items():
        plain["state"][index] = {}
        for key, value in state.items():
            if isinstance(value, np.ndarray):
                arrays[f"{index}/{key}"] = value
            else:
                plain["state"][index][key] = value
    restored = json.loads(json.dumps(plain))
    for name, array in load_safetensors(save_safetensors(arrays)).items():
        index, key = name.split("/")
        restored["state"][index][key] = array
    return restored


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_state_dict_round_trip_resumes_exactly(name, kwargs):
    first = [nn.Parameter(a) for a in starting_arrays()]
    opt = getattr(optim, name)(first, **kwargs)
    for _ in range(3):
        set_gradients(first)
        opt.step()
    saved = through_safetensors_and_json(opt.state_dict())
    second = [nn.Parameter(p.data.copy()) for p in first]
    resumed = getattr(optim, name)(second, lr=123.0)  # the loaded hyper-parameters win
    resumed.load_state_dict(saved)
    for _ in range(4):
        set_gradients(first)
        set_gradients(second)
        opt.step()
        resumed.step()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.data, b.data)


def test_load_state_dict_names_a_shape_mismatch():
    opt = optim.Adam([nn.Parameter(a) for a in starting_arrays()])
    set_gradients(opt.param_groups[0]["params"])
    opt.step()
    other = optim.Adam([nn.Parameter(np.zeros(s[::-1])) for s in SHAPES])
    message = (
        "Adam.load_state_dict: parameter 0: 'exp_avg' has shape (3, 4) in the state but the "
        "parameter has shape (4, 3)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        other.load_state_dict(opt.state_dict())


def test_load_state_dict_rejects_another_optimizers_state():
    params = [nn.Parameter(a) for a in starting_arrays()]
    saved = optim.SGD(params, lr=0.1, momentum=0.9).state_dict()
    with pytest.raises(
        ValueError, match="Adam: unknown option 'dampening' in saved parameter group 0"
    ):
        optim.Adam(params).load_state_dict(saved)


def test_load_state_dict_rejects_a_different_number_of_parameters():
    params = [nn.Parameter(a) for a in starting_arrays()]
    saved = optim.SGD(params, lr=0.1).state_dict()
    with pytest.raises(ValueError, match="group 0 has 3 parameters in the state but 2 here"):
        optim.SGD(params[:2], lr=0.1).load_state_dict(saved)


def test_load_state_dict_changes_nothing_when_it_fails():
    params = [nn.Parameter(a) for a in starting_arrays()]
    opt = optim.Adam(params, lr=0.5)
    saved = opt.state_dict()
    saved["param_groups"][0]["lr"] = 0.1
    saved["state"][0] = {"step": 1, "exp_avg": np.zeros(2), "exp_avg_sq": np.zeros(2)}
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(saved)
    assert opt.param_groups[0]["lr"] == 0.5
    assert opt.state == {}


# ---- hyper-parameters ---------------------------------------------------------------------------
BAD_OPTIONS = [
    (optim.SGD, {"lr": -1}, "SGD: lr must be >= 0, got -1"),
    (optim.SGD, {"lr": float("nan")}, "SGD: lr must be >= 0, got nan"),
    (optim.SGD, {"lr": 0.1, "momentum": -0.5}, "SGD: momentum must be >= 0, got -0.5"),
    (optim.SGD, {"lr": 0.1, "dampening": 2}, "SGD: dampening must be in [0, 1], got 2"),
    (
        optim.SGD,
        {"lr": 0.1, "nesterov": True},
        "SGD: nesterov=True needs momentum > 0 and dampening = 0",
    ),
    (optim.Adam, {"betas": (0.9, 1.0)}, "Adam: betas[1] must be in [0, 1), got 1.0"),
    (optim.Adam, {"betas": 0.9}, "Adam: betas must be a pair (beta1, beta2), got 0.9"),
    (optim.Adam, {"eps": -1e-8}, "Adam: eps must be >= 0, got -1e-08"),
    (optim.AdamW, {"weight_decay": -0.1}, "AdamW: weight_decay must be >= 0, got -0.1"),
    (optim.RMSprop, {"alpha": 1.5}, "RMSprop: alpha must be in [0, 1], got 1.5"),
    (optim.RMSprop, {"momentum": -1}, "RMSprop: momentum must be >= 0, got -1"),
    (optim.Adagrad, {"lr_decay": -1}, "Adagrad: lr_decay must be >= 0, got -1"),
    (
        optim.Adagrad,
        {"initial_accumulator_value": -1},
        "Adagrad: initial_accumulator_value must be >= 0, got -1",
    ),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"), BAD_OPTIONS, ids=[m for _, _, m in BAD_OPTIONS]
)
def test_bad_hyper_parameters_raise_naming_the_value(cls, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        cls([nn.Parameter(np.zeros(2))], **kwargs)


def test_a_bad_option_in_a_parameter_group_is_named():
    with pytest.raises(ValueError, match=re.escape("SGD: lr must be >= 0, got -0.1")):
        optim.SGD([{"params": [nn.Parameter(np.zeros(2))], "lr": -0.1}], lr=0.1)


def test_an_unknown_option_in_a_parameter_group_lists_the_options():
    message = (
        "SGD: unknown option 'learning_rate' in parameter group 0; the options are dampening, lr, "
        "momentum, nesterov, weight_decay"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        optim.SGD([{"params": [nn.Parameter(np.zeros(2))], "learning_rate": 0.1}])


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ([], ValueError, "SGD got an empty parameter list"),
        (nn.Linear(2, 2), TypeError, "pass model.parameters()"),
        ([np.zeros(2)], TypeError, "item 0 is a ndarray, not a Parameter"),
        ({nn.Parameter(np.zeros(2))}, TypeError, "set"),
    ],
    ids=["empty", "module", "array", "set"],
)
def test_bad_parameter_lists_are_explained(params, error, message):
    with pytest.raises(error, match=re.escape(message)):
        optim.SGD(params, lr=0.1)


def test_a_parameter_listed_twice_is_rejected():
    p = nn.Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="repeats a parameter"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)


def test_a_hyper_parameter_of_the_wrong_type_is_a_type_error():
    with pytest.raises(TypeError, match=re.escape("Adam: lr must be a number, got '0.1'")):
        optim.Adam([nn.Parameter(np.zeros(2))], lr="0.1")


# ---- schedules ----------------------------------------------------------------------------------
SCHEDULES = [
    ("StepLR", {"step_size": 3, "gamma": 0.5}),
    ("StepLR", {"step_size": 1}),
    ("ExponentialLR", {"gamma": 0.9}),
    ("CosineAnnealingLR", {"T_max": 7}),
    ("CosineAnnealingLR", {"T_max": 5, "eta_min": 0.01}),
]
PLATEAUS = [
    {"patience": 2},
    {"mode": "max", "patience": 1, "factor": 0.5},
    {"patience": 1, "threshold": 0.05, "threshold_mode": "abs", "cooldown": 2},
    {"mode": "max", "patience": 0, "threshold_mode": "abs", "min_lr": [0.01, 0.002]},
    {"patience": 0, "factor": 0.5, "min_lr": 0.02, "eps": 1e-3},
]
METRICS = [
    float(v) for v in np.round(np.random.default_rng(3).standard_normal(30).cumsum() * 0.1 + 2, 2)
]


def schedule_pair(name, kwargs):
    ours = getattr(optim, name)
    theirs = getattr(torch.optim.lr_scheduler, name)
    p, q = nn.Parameter(np.zeros(1)), torch.zeros(1, requires_grad=True)
    opt = optim.SGD([{"params": [p]}, {"params": [nn.Parameter(np.zeros(1))], "lr": 0.03}], lr=0.1)
    reference = torch.optim.SGD([{"params": [q]}, {"params": [torch.zeros(1)], "lr": 0.03}], lr=0.1)
    return opt, ours(opt, **kwargs), reference, theirs(reference, **kwargs)


@pytest.mark.parametrize(("name", "kwargs"), SCHEDULES, ids=[f"{n}-{k}" for n, k in SCHEDULES])
def test_schedule_lr_sequence_matches_torch(name, kwargs):
    opt, schedule, reference, torch_schedule = schedule_pair(name, kwargs)
    for epoch in range(25):
        opt.step()
        reference.step()
        schedule.step()
        torch_schedule.step()
        np.testing.assert_allclose(
            schedule.get_last_lr(),
            torch_schedule.get_last_lr(),
            rtol=1e-10,
            err_msg=f"epoch {epoch}",
        )
        assert [g["lr"] for g in opt.param_groups] == schedule.get_last_lr()


@pytest.mark.parametrize("kwargs", PLATEAUS, ids=[str(k) for k in PLATEAUS])
def test_reduce_lr_on_plateau_matches_torch(kwargs):
    _, schedule, _, torch_schedule = schedule_pair("ReduceLROnPlateau", kwargs)
    for epoch, metric in enumerate(METRICS):
        schedule.step(metric)
        torch_schedule.step(metric)
        np.testing.assert_allclose(
            schedule.get_last_lr(),
            torch_schedule.get_last_lr(),
            rtol=1e-12,
            err_msg=f"epoch {epoch}",
        )
    assert schedule.get_last_lr() != [0.1, 0.03]  # the sequence did cut the lr


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [*SCHEDULES, ("ReduceLROnPlateau", PLATEAUS[1])],
    ids=[*(f"{n}-{k}" for n, k in SCHEDULES), "ReduceLROnPlateau"],
)
def test_schedule_state_dict_resumes_at_the_same_position(name, kwargs):
    def advance(opt, schedule, epoch):
        opt.step()
        schedule.step(METRICS[epoch]) if name == "ReduceLROnPlateau" else schedule.step()

    opt, schedule, _, _ = schedule_pair(name, kwargs)
    for epoch in range(9):
        advance(opt, schedule, epoch)
    saved = json.loads(json.dumps(schedule.state_dict()))
    fresh_opt, resumed, _, _ = schedule_pair(name, kwargs)  # only the schedule's state is loaded
    resumed.load_state_dict(saved)
    for epoch in range(9, 25):
        advance(opt, schedule, epoch)
        advance(fresh_opt, resumed, epoch)
        assert resumed.get_last_lr() == schedule.get_last_lr()
        assert [g["lr"] for g in fresh_opt.param_groups] == schedule.get_last_lr()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda opt: optim.StepLR(opt, step_size=0),
            "StepLR: step_size must be an integer >= 1, got 0",
        ),
        (
            lambda opt: optim.ExponentialLR(opt, gamma=-0.5),
            "ExponentialLR: gamma must be >= 0, got -0.5",
        ),
        (
            lambda opt: optim.CosineAnnealingLR(opt, T_max=0),
            "CosineAnnealingLR: T_max must be an integer >= 1, got 0",
        ),
        (
            lambda opt: optim.ReduceLROnPlateau(opt, mode="lowest"),
            "ReduceLROnPlateau: mode must be 'min' or 'max', got 'lowest'",
        ),
        (
            lambda opt: optim.ReduceLROnPlateau(opt, factor=1.0),
            "ReduceLROnPlateau: factor must be in [0, 1), got 1.0",
        ),
        (
            lambda opt: optim.ReduceLROnPlateau(opt, min_lr=[0.1, 0.2]),
            "min_lr has 2 values but the optimizer has 1 parameter groups",
        ),
    ],
    ids=["step_size", "gamma", "T_max", "mode", "factor", "min_lr"],
)
def test_bad_schedule_options_raise_naming_the_value(make, message):
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=re.escape(message)):
        make(opt)


# ---- gradient clipping --------------------------------------------------------------------------
def gradient_pair(dtype=np.float64):
    ours = [nn.Parameter(a) for a in starting_arrays(dtype)]
    theirs = [torch.tensor(a, requires_grad=True) for a in starting_arrays(dtype)]
    set_gradients(ours, theirs)
    ours[1].grad = theirs[1].grad = None
    return ours, theirs


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    ours, theirs = gradient_pair()
    total = optim.clip_grad_norm_(ours, max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert total == pytest.approx(expected.item(), rel=1e-12)
    for mine, reference in zip(ours, theirs):
        assert (mine.grad is None) == (reference.grad is None)
        if mine.grad is not None:
            np.testing.assert_allclose(mine.grad, reference.grad.numpy(), rtol=1e-12)


def test_clip_grad_norm_keeps_float32_and_does_not_write_the_old_gradient():
    ours, _ = gradient_pair(np.float32)
    old = ours[0].grad
    kept = old.copy()
    optim.clip_grad_norm_(ours, 0.1)
    assert ours[0].grad.dtype == np.float32
    np.testing.assert_array_equal(old, kept)
    assert (
        math.sqrt(sum(float((p.grad**2).sum()) for p in ours if p.grad is not None)) <= 0.1 + 1e-6
    )


def test_clip_grad_value_matches_torch():
    ours, theirs = gradient_pair()
    optim.clip_grad_value_(ours, 0.3)
    torch.nn.utils.clip_grad_value_(theirs, 0.3)
    for mine, reference in zip(ours, theirs):
        if mine.grad is not None:
            np.testing.assert_array_equal(mine.grad, reference.grad.numpy())


def test_clip_grad_norm_rejects_a_negative_max_norm():
    with pytest.raises(
        ValueError, match=re.escape("clip_grad_norm_: max_norm must be >= 0, got -1.0")
    ):
        optim.clip_grad_norm_(gradient_pair()[0], -1)


def test_optimizers_loaded_from_one_state_dict_are_independent():
    first = [nn.Parameter(a) for a in starting_arrays()]
    opt = optim.Adam(first, lr=0.05, amsgrad=True)
    set_gradients(first)
    opt.step()
    saved = opt.state_dict()
    copies = [[nn.Parameter(p.data.copy()) for p in first] for _ in range(2)]
    loaded = [optim.Adam(params) for params in copies]
    for resumed in loaded:
        resumed.load_state_dict(saved)
    for params, resumed in [(first, opt), *zip(copies, loaded)]:
        for _ in range(3):
            set_gradients(params)
            resumed.step()
    for a, b, c in zip(first, *copies):
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.data, c.data)


def test_state_dict_is_a_snapshot_that_later_steps_leave_alone():
    params = [nn.Parameter(a) for a in starting_arrays()]
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    set_gradients(params)
    opt.step()
    saved = opt.state_dict()
    buffer = saved["state"][0]["momentum_buffer"].copy()
    set_gradients(params)
    opt.step()
    np.testing.assert_array_equal(saved["state"][0]["momentum_buffer"], buffer)


# ---- one form of state --------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_a_flat_groups_state_is_views_of_one_buffer_so_nothing_converts(name, kwargs):
    params = [nn.Parameter(a) for a in starting_arrays()]
    opt = getattr(optim, name)(params, **kwargs)
    set_gradients(params)
    opt.step()
    states = [opt.state[p] for p in params]
    for key, value in states[0].items():
        if key == "step":
            assert all(s["step"] is value for s in states)  # one counter for the whole group
        else:
            assert all(s[key].base is not None for s in states)
            assert len({id(s[key].base) for s in states}) == 1
    arrays = [k for k, v in states[0].items() if k != "step"]
    before = [opt.state_dict()["state"][0][k] for k in arrays]
    set_gradients(params)
    opt.step()
    after = opt.state_dict()["state"][0]  # state_dict reads the views the update moved
    for key, old in zip(arrays, before):
        assert not np.array_equal(after[key], old)


@pytest.mark.parametrize("rule", ["sgd_update", "adam_update", "rmsprop_update", "adagrad_update"])
def test_each_rule_is_a_public_pure_function_over_arrays(rule):
    assert callable(getattr(optim, rule))


def test_sgd_update_worked_by_hand():
    p, g = np.array([1.0, 2.0]), np.array([0.5, -1.0])
    optim.sgd_update(p, g, None, lr=0.1)
    np.testing.assert_allclose(p, [0.95, 2.1])
