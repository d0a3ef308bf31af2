"""chainrule.explain: every reported factor and product, against PyTorch, finite differences, the
founding tutorial's own formulas and a 2-2-2 network worked by hand; the text, JSON and CLI."""

import json
import re

import numpy as np
import pytest
import torch

from chainrule import cli, nn
from chainrule.cli import explain as explain_command
from chainrule.explain import explain
from chainrule.registry import LOSSES

TF = torch.nn.functional
TORCH_ACTIVATIONS = {
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "ReLU": torch.relu,
    "GELU": TF.gelu,
    "LeakyReLU": lambda z: TF.leaky_relu(z, 0.01),
    "Softplus": TF.softplus,
    "Softmax": lambda z: torch.softmax(z, -1),
    "Identity": lambda z: z,
}
TORCH_LOSSES = {
    "half_mse": lambda out, y: 0.5 * TF.mse_loss(out, y),
    "mse": TF.mse_loss,
    "bce": TF.binary_cross_entropy,
    "bce_logits": TF.binary_cross_entropy_with_logits,
    "cross_entropy": TF.cross_entropy,
    "huber": TF.huber_loss,
}


def shown(v):
    """A number as the text writes it: 4 significant digits, negatives in parentheses."""
    return f"({v:#.4g})" if v < 0 else f"{v:#.4g}"


def loaded(model, state):
    """The model with its parameters set by hand: state maps '0.weight', ... to arrays."""
    model.load_state_dict(state)
    return model


# ---- PyTorch as the oracle ----------------------------------------------------------------
def torch_pass(model, x, y, loss):
    """The same network in torch, float64: (loss, output of every module with .grad, parameters)."""
    params = {
        name: torch.tensor(p.data.astype(np.float64), requires_grad=True)
        for name, p in model.named_parameters()
    }
    h, outputs = torch.tensor(x, dtype=torch.float64), []
    for i, module in enumerate(model.layers):
        if isinstance(module, nn.Linear):
            h = TF.linear(h, params[f"{i}.weight"], params.get(f"{i}.bias"))
        else:
            h = TORCH_ACTIVATIONS[type(module).__name__](h)
        h.retain_grad()
        outputs.append(h)
    target = torch.tensor(y) if y.dtype.kind in "iu" else torch.tensor(y, dtype=torch.float64)
    value = TORCH_LOSSES[loss](h, target)
    value.backward()
    return value, outputs, params


def activation_index(model, first):
    """Where the Linear at `first` gets its a: the activation after it, or itself if none."""
    after = first + 1 < len(model.layers) and not isinstance(model.layers[first + 1], nn.Linear)
    return first + 1 if after else first


# kind -> (Linear widths (ints) and activations (classes) after 3 inputs, loss, target maker)
NETWORKS = {
    "sigmoid-half_mse": (
        [4, nn.Sigmoid, 2, nn.Sigmoid],
        "half_mse",
        lambda rng: rng.random((3, 2)),
    ),
    "tanh-gelu-mse": (
        [4, nn.Tanh, 3, nn.GELU, 2],
        "mse",
        lambda rng: rng.normal(size=(3, 2)),
    ),
    "leaky-softplus-huber": (
        [4, nn.LeakyReLU, 2, nn.Softplus],
        "huber",
        lambda rng: 3 * rng.random((3, 2)),
    ),
    "relu-cross_entropy": ([5, nn.ReLU, 3], "cross_entropy", lambda rng: np.array([2, 0, 1])),
    "tanh-softmax-mse": (
        [4, nn.Tanh, 3, nn.Softmax],
        "mse",
        lambda rng: rng.dirichlet(np.ones(3), 3),
    ),
    "softplus-sigmoid-bce": (
        [3, nn.Softplus, 1, nn.Sigmoid],
        "bce",
        lambda rng: rng.integers(0, 2, (3, 1)) * 1.0,
    ),
    "identity-bce_logits": (
        [3, nn.Identity, 2],
        "bce_logits",
        lambda rng: rng.integers(0, 2, (3, 2)) * 1.0,
    ),
}
KINDS = list(NETWORKS)


def network(kind, rng):
    """A small network from NETWORKS with 3 samples of inputs and targets."""
    items, loss, target = NETWORKS[kind]
    layers, width = [], 3
    for item in items:
        if isinstance(item, int):
            layers.append(nn.Linear(width, item, rng=rng))
            width = item
        else:
            layers.append(item())
    return nn.Sequential(*layers), rng.uniform(-1.5, 1.5, (3, 3)), target(rng), loss


def every_parameter_element(model, rng):
    """One element of every weight and bias, e.g. ['0.weight[2,1]', '0.bias[3]', ...]."""
    names = []
    for name, p in model.named_parameters():
        index = [int(rng.integers(n)) for n in p.shape]
        names.append(f"{name}[{','.join(map(str, index))}]")
    return names


@pytest.fixture(params=KINDS)
def case(request):
    rng = np.random.default_rng(7)
    model, x, y, loss = network(request.param, rng)
    e = explain(model, x, y, loss=loss, weight=every_parameter_element(model, rng))
    return model, x, y, loss, e


def test_covers_every_loss():
    assert {network(kind, np.random.default_rng(0))[3] for kind in KINDS} == set(LOSSES)


def test_forward_values_and_loss_match_torch(case):
    model, x, y, loss, e = case
    value, outputs, _ = torch_pass(model, x, y, loss)
    np.testing.assert_allclose(e.loss, value.item(), rtol=1e-12)
    for layer in e.layers.values():
        first = int(layer.name)
        a = outputs[activation_index(model, first)]
        np.testing.assert_allclose(layer.z, outputs[first].detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(layer.a, a.detach().numpy(), rtol=1e-12)


def test_intermediate_gradients_match_torch(case):
    model, x, y, loss, e = case
    _, outputs, _ = torch_pass(model, x, y, loss)
    for layer in e.layers.values():
        first = int(layer.name)
        a = outputs[activation_index(model, first)]
        np.testing.assert_allclose(layer.dL_dz, outputs[first].grad.numpy(), rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(layer.dL_da, a.grad.numpy(), rtol=1e-9, atol=1e-14)


def test_local_derivatives_match_torch(case):
    _, _, _, _, e = case
    for layer in e.layers.values():
        function = TORCH_ACTIVATIONS[layer.activation]
        z = torch.tensor(layer.z, requires_grad=True)
        if layer.activation == "Softmax":  # (batch, k, j) = ∂a_k/∂z_j, sample by sample
            expected = np.stack(
                [
                    torch.autograd.functional.jacobian(function, z[n].detach()).numpy()
                    for n in range(len(z))
                ]
            )
        else:
            (expected,) = torch.autograd.grad(function(z).sum(), z)
            expected = expected.numpy()
        np.testing.assert_allclose(layer.da_dz, expected, rtol=1e-9, atol=1e-14)


def test_parameter_gradients_and_step_match_torch(case):
    model, x, y, loss, e = case
    _, _, params = torch_pass(model, x, y, loss)
    assert list(e.grad) == [name for name, _ in model.named_parameters()]
    for name, p in params.items():
        np.testing.assert_allclose(e.grad[name], p.grad.numpy(), rtol=1e-9, atol=1e-14)
        expected = (p - 0.1 * p.grad).detach().numpy()
        np.testing.assert_allclose(e.updated[name], expected, rtol=1e-12)


def test_every_chain_factor_and_product_matches_torch_per_sample(case):
    """Each factor and product is of the sample's own loss L_n: torch on that sample alone."""
    model, x, y, loss, e = case
    for n in range(len(x)):
        _, outputs, params = torch_pass(model, x[n : n + 1], y[n : n + 1], loss)
        inputs = [torch.tensor(x[n : n + 1]), *outputs]  # inputs[i] is what module i received
        for c in e.chains:
            first, j = int(c.layer), c.index[0]
            close = {"rtol": 1e-9, "atol": 1e-14}
            if c.dL_da is not None:  # ∂L_n/∂a · ∂a/∂z: the activation's output and input grads
                dL_da = outputs[activation_index(model, first)].grad[0, j].item()
                np.testing.assert_allclose(c.dL_da[n], dL_da, **close)
                np.testing.assert_allclose(c.dL_da[n] * c.da_dz[n], c.dL_dz[n], **close)
            np.testing.assert_allclose(c.dL_dz[n], outputs[first].grad[0, j].item(), **close)
            dz_dw = inputs[first][0, c.index[1]].item() if len(c.index) == 2 else 1.0
            np.testing.assert_allclose(c.dz_dw[n], dz_dw, rtol=1e-12)
            own_gradient = params[c.parameter].grad[c.index].item()  # ∂L_n/∂w from L_n alone
            np.testing.assert_allclose(c.terms[n], own_gradient, **close)


def test_batch_gradient_is_the_mean_of_the_per_sample_products(case):
    _, _, _, _, e = case
    for c in e.chains:
        assert c.value == pytest.approx(np.mean(c.terms), rel=1e-12, abs=1e-15)
        assert c.value == e.grad[c.parameter][c.index]


def test_hidden_layer_error_is_the_sum_over_the_next_layer(case):
    _, _, _, _, e = case
    for c in e.chains:
        if c.backprop is None:
            assert e.layers[c.layer].index == len(e.layers)
            continue
        n = len(e.x)
        total = sum(g * w for g, w in c.backprop)
        assert total == pytest.approx(
            n * e.layers[c.layer].dL_da[0, c.index[0]], rel=1e-10, abs=1e-15
        )


def test_every_gradient_agrees_with_finite_differences(case):
    _, _, _, _, e = case
    for name in e.grad:
        np.testing.assert_allclose(e.numeric[name], e.grad[name], rtol=1e-5, atol=1e-8)
    for layer in e.layers.values():
        np.testing.assert_allclose(layer.numeric_dL_da, layer.dL_da, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(layer.numeric_dL_dz, layer.dL_dz, rtol=1e-5, atol=1e-8)
    assert [c.status for c in e.chains] == ["agrees"] * len(e.chains)
    assert all(c.numeric == pytest.approx(c.value, rel=1e-5, abs=1e-8) for c in e.chains)


# ---- the founding tutorial -----------------------------------------------------------------
XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
XOR_Y = np.array([[0], [1], [1], [0]], dtype=np.float64)


def tutorial_first_epoch():
    """The tutorial's program for one epoch; a local RandomState(0) replaces np.random.seed(0)."""
    state = np.random.RandomState(0)
    weights, bias = state.randn(2, 1), state.randn(1)
    a = 1 / (1 + np.exp(-(XOR_X @ weights + bias)))
    loss = np.mean(0.5 * (a - XOR_Y) ** 2)
    dz = (a - XOR_Y) * a * (1 - a)
    dw, db = XOR_X.T @ dz / len(XOR_X), np.sum(dz) / len(XOR_X)
    new_weights, new_bias = weights - 0.1 * dw, bias - 0.1 * db
    return {
        "weights": weights,
        "bias": bias,
        "loss": loss,
        "dw": dw,
        "db": db,
        "new_weights": new_weights,
        "new_bias": new_bias,
    }


def tutorial_model(t):
    """The tutorial's z = X·weights + b is Linear's X·Wᵀ + b with W = weightsᵀ."""
    model = nn.Sequential(nn.Linear(2, 1, dtype=np.float64, rng=0), nn.Sigmoid())
    return loaded(model, {"0.weight": t["weights"].T, "0.bias": t["bias"]})


def test_tutorial_network_matches_the_tutorials_numpy_formulas():
    t = tutorial_first_epoch()
    e = explain(tutorial_model(t), XOR_X, XOR_Y, lr=0.1)
    assert e.loss == pytest.approx(t["loss"], rel=1e-12)
    assert f"{e.loss:.4f}" == "0.1864"  # the tutorial prints "Epoch 0, Loss: 0.1864"
    np.testing.assert_allclose(e.grad["0.weight"], t["dw"].T, rtol=1e-12)
    np.testing.assert_allclose(e.grad["0.bias"], [t["db"]], rtol=1e-12)
    np.testing.assert_allclose(e.updated["0.weight"], t["new_weights"].T, rtol=1e-12)
    np.testing.assert_allclose(e.updated["0.bias"], t["new_bias"], rtol=1e-12)


def test_tutorial_text_shows_each_samples_product_and_the_batch_average():
    t = tutorial_first_epoch()
    text = str(explain(tutorial_model(t), XOR_X, XOR_Y))
    # Sample 3, x = (1, 1), y = 0: ∂L_3/∂a = ŷ − y, ∂a/∂z = ŷ(1 − ŷ), ∂z/∂W[0,0] = x_0 = 1.
    a3 = 1 / (1 + np.exp(-(t["weights"].sum() + t["bias"][0])))
    product = f"{a3:#.4g} × {a3 * (1 - a3):#.4g} × 1.000 = {a3 * a3 * (1 - a3):#.4g}"
    assert f"n=3: ∂L_3/∂W[0,0] = ∂L_3/∂a · ∂a/∂z · ∂z/∂W = {product}" in text
    assert "0.9586 × 0.03966 × 1.000 = 0.03802" in text
    assert "∂L/∂W[0,0] = (1/4)·(" in text and f"= {t['dw'][0, 0]:#.4g}" in text
    assert "L = (1/4)·Σ_n L_n" in text and "0.1864" in text


# ---- a 2-2-2 sigmoid network worked by hand ----------------------------------------------------
def test_two_two_two_network_worked_by_hand():
    """The classic worked example, x = [0.05, 0.10] and y = [0.01, 0.99], with L = ½·mean((ŷ − y)²):
    half the example's Σ½(ŷ − y)² over its 2 outputs, so every gradient is half of the example's."""
    W1, b1 = np.array([[0.15, 0.20], [0.25, 0.30]]), np.array([0.35, 0.35])
    W2, b2 = np.array([[0.40, 0.45], [0.50, 0.55]]), np.array([0.60, 0.60])
    x, y = np.array([0.05, 0.10]), np.array([0.01, 0.99])
    f64 = np.float64  # the weights exactly as written: 0.15 has no exact float32
    layers = [nn.Linear(2, 2, dtype=f64), nn.Sigmoid(), nn.Linear(2, 2, dtype=f64), nn.Sigmoid()]
    state = {"0.weight": W1, "0.bias": b1, "2.weight": W2, "2.bias": b2}
    e = explain(loaded(nn.Sequential(*layers), state), x, y)

    def sigmoid(v):
        return 1 / (1 + np.exp(-v))

    # Forward. z1_0 = 0.15·0.05 + 0.20·0.10 + 0.35 = 0.3775, z1_1 = 0.3925
    z1 = np.array([0.15 * 0.05 + 0.20 * 0.10 + 0.35, 0.25 * 0.05 + 0.30 * 0.10 + 0.35])
    a1 = sigmoid(z1)  # [0.593269992, 0.596884378]
    z2 = np.array([0.40 * a1[0] + 0.45 * a1[1] + 0.60, 0.50 * a1[0] + 0.55 * a1[1] + 0.60])
    a2 = sigmoid(z2)  # ŷ = [0.751365070, 0.772928465]
    loss = 0.5 * ((a2[0] - y[0]) ** 2 + (a2[1] - y[1]) ** 2) / 2  # 0.149185554
    # Output layer. ∂L/∂ŷ_k = (ŷ_k − y_k)/2 (the mean over 2 outputs) = [0.370682535, −0.108535768]
    dL_da2 = (a2 - y) / 2
    da2_dz2 = a2 * (1 - a2)  # [0.186815602, 0.175510053]
    dL_dz2 = dL_da2 * da2_dz2  # [0.069249484, −0.019049119]
    # ∂L/∂W2[0,0] = ∂L/∂ŷ_0 · ∂ŷ_0/∂z2_0 · ∂z2_0/∂W2[0,0] = 0.370682535 × 0.186815602 × 0.593269992
    dW2_00 = dL_da2[0] * da2_dz2[0] * a1[0]  # 0.041083521 (the worked example: 0.082167041)
    # Hidden layer. ∂L/∂a1_0 = Σ_k ∂L/∂z2_k · W2[k,0] = 0.069249484·0.40 − 0.019049119·0.50
    dL_da1_0 = dL_dz2[0] * 0.40 + dL_dz2[1] * 0.50  # 0.018175234
    da1_dz1_0 = a1[0] * (1 - a1[0])  # 0.241300709
    dW1_00 = dL_da1_0 * da1_dz1_0 * x[0]  # 0.000219284 (the worked example: 0.000438568)

    assert e.loss == pytest.approx(loss, rel=1e-12)
    assert loss == pytest.approx(0.298371109 / 2, rel=1e-8)
    np.testing.assert_allclose(e.layers["0"].z[0], z1, rtol=1e-12)
    np.testing.assert_allclose(e.layers["2"].a[0], a2, rtol=1e-12)
    np.testing.assert_allclose(e.layers["2"].dL_dz[0], dL_dz2, rtol=1e-12)
    output, hidden = e.chains[1], e.chains[0]  # W2[0,0] and W1[0,0]
    assert (output.parameter, hidden.parameter) == ("2.weight", "0.weight")
    assert [output.dL_da[0], output.da_dz[0], output.dz_dw[0]] == pytest.approx(
        [dL_da2[0], da2_dz2[0], a1[0]], rel=1e-12
    )
    assert output.value == pytest.approx(dW2_00, rel=1e-12)
    assert dW2_00 == pytest.approx(0.082167041 / 2, rel=1e-7)
    np.testing.assert_allclose(hidden.backprop, [(dL_dz2[0], 0.40), (dL_dz2[1], 0.50)], rtol=1e-12)
    assert [hidden.dL_da[0], hidden.da_dz[0], hidden.dz_dw[0]] == pytest.approx(
        [dL_da1_0, da1_dz1_0, 0.05], rel=1e-12
    )
    assert hidden.value == pytest.approx(dW1_00, rel=1e-12)
    assert dW1_00 == pytest.approx(0.000438568 / 2, rel=1e-5)
    assert e.updated["0.weight"][0, 0] == pytest.approx(0.15 - 0.1 * dW1_00, rel=1e-12)


def test_text_writes_the_product_with_numbers_for_one_sample():
    t = tutorial_first_epoch()
    e = explain(tutorial_model(t), [1.0, 1.0], [0.0])
    assert "∂L/∂W[0,0] = ∂L/∂a · ∂a/∂z · ∂z/∂W = 0.9586 × 0.03966 × 1.000 = 0.03802" in str(e)
    six = e.format(precision=6)
    assert "= 0.958630 × 0.0396586 × 1.00000 = 0.0380179" in six
    assert "finite difference 0.0380179, relative error" in six and ": agrees" in six


def test_text_shows_how_a_hidden_error_came_from_the_next_layer():
    model = nn.Sequential(
        nn.Linear(2, 2, rng=0), nn.Sigmoid(), nn.Linear(2, 2, rng=0), nn.Sigmoid()
    )
    w2 = np.array([[0.5, 0.0], [-0.25, 0.0]])
    state = {"0.weight": np.full((2, 2), 0.1), "0.bias": np.zeros(2), "2.weight": w2}
    model = loaded(model, {**state, "2.bias": np.zeros(2)})
    e = explain(model, [1.0, 1.0], [1.0, 0.0])
    _, outputs, _ = torch_pass(model, np.ones((1, 2)), np.array([[1.0, 0.0]]), "half_mse")
    g = outputs[2].grad[0].numpy()  # ∂L/∂z^[2]
    products = (
        f"{shown(g[0])} × 0.5000 + {shown(g[1])} × (-0.2500) = {g[0] * 0.5 - g[1] * 0.25:#.4g}"
    )
    expected = f"∂L/∂a_0 = Σ_k ∂L/∂z^[2]_k · W^[2]_k0 = {products}"
    assert expected in str(e)


def test_step_shows_the_update_with_numbers():
    t = tutorial_first_epoch()
    text = explain(tutorial_model(t), XOR_X, XOR_Y).format(step=True)
    w, dw = t["weights"][0, 0], t["dw"][0, 0]
    assert f"0.weight[0,0] ← {w:#.4g} − 0.1 × {dw:#.4g} = {w - 0.1 * dw:#.4g}" in text
    assert "←" not in str(explain(tutorial_model(t), XOR_X, XOR_Y))


def test_chosen_weight_is_written_out_instead_of_the_defaults():
    model, x, y, loss = network("sigmoid-half_mse", np.random.default_rng(0))
    e = explain(model, x, y, loss=loss, weight="2.weight[1,3]")
    assert [(c.parameter, c.index) for c in e.chains] == [("2.weight", (1, 3))]
    assert "W[1,3] (2.weight[1,3]) connects a^[1]_3 to z^[2]_1:" in str(e)


# ---- kinks, large models, the user's model, JSON, errors -------------------------------------
def test_relu_input_at_its_kink_is_flagged_not_reported_as_a_mismatch():
    model = nn.Sequential(nn.Linear(2, 2, rng=0), nn.ReLU(), nn.Linear(2, 1, rng=0))
    # z^[1]_0 = 0.5·1 − 0.5·1 + 0 = 0 exactly: ReLU's kink.
    w0, b0 = np.array([[0.5, -0.5], [0.3, 0.2]]), np.array([0.0, 0.1])
    state = {"0.weight": w0, "0.bias": b0, "2.weight": np.ones((1, 2)), "2.bias": np.zeros(1)}
    model = loaded(model, state)
    e = explain(model, [1.0, 1.0], [2.0])
    assert e.layers["0"].kink.tolist() == [[True, False]]
    (chain,) = [c for c in e.chains if c.parameter == "0.weight"]
    # The differences straddle the kink: one side of ReLU has slope 1, the other 0.
    assert chain.value == 0.0 and chain.numeric != pytest.approx(0.0)
    assert chain.status == "kink"
    text = str(e)
    assert "at the kink: finite differences are not meaningful here" in text
    assert "MISMATCH" not in text


def test_large_model_differences_only_the_chosen_weights():
    model = nn.Sequential(nn.Linear(80, 64, rng=0), nn.Tanh(), nn.Linear(64, 1, rng=1))
    e = explain(model, np.linspace(-1, 1, 80), [0.5])
    assert all(c.status == "agrees" for c in e.chains)
    assert np.isnan(e.numeric["0.weight"]).sum() == e.numeric["0.weight"].size - 1
    assert np.isnan(e.layers["0"].numeric_dL_dz).all()
    assert "(the rest not differenced: a large model)" in str(e)
    json.dumps(e.to_dict(), allow_nan=False)


def test_users_model_and_its_gradients_are_unchanged():
    model, x, y, loss = network("tanh-gelu-mse", np.random.default_rng(0))
    model.layers[0].weight.grad = np.ones((4, 3), dtype=np.float32)
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    explain(model, x, y, loss=loss)
    for name, p in model.named_parameters():
        assert p.dtype == np.float32
        np.testing.assert_array_equal(p.data, before[name])
    np.testing.assert_array_equal(model.layers[0].weight.grad, np.ones((4, 3)))
    assert model.layers[2].weight.grad is None


def test_to_dict_is_plain_json():
    model, x, y, loss = network("relu-cross_entropy", np.random.default_rng(0))
    e = explain(model, x, y, loss=loss)
    data = json.loads(json.dumps(e.to_dict(), allow_nan=False))
    assert data["loss"] == pytest.approx(e.loss)
    np.testing.assert_allclose(data["grad"]["2.weight"], e.grad["2.weight"].tolist(), rtol=1e-12)
    np.testing.assert_allclose(data["layers"]["0"]["dL_dz"], e.layers["0"].dL_dz, rtol=1e-12)
    assert data["chains"][0]["parameter"] == "0.weight" and data["chains"][0]["index"] == [0, 0]


ONE_UNIT = nn.Sequential(nn.Linear(2, 1, rng=0))


@pytest.mark.parametrize(
    ("model", "kwargs", "error", "message"),
    [
        (ONE_UNIT, {"loss": "nope"}, ValueError, "expected one of mse, half_mse"),
        (ONE_UNIT, {"x": [1.0, 2.0, 3.0]}, ValueError, r"shape \(2,\)"),
        (ONE_UNIT, {"x": [np.nan, 0.0]}, ValueError, "NaN"),
        (ONE_UNIT, {"y": [1.0, 0.0]}, ValueError, "1 output"),
        (ONE_UNIT, {"weight": "1.weight"}, KeyError, "has 0.weight, 0.bias"),
        (ONE_UNIT, {"weight": "0.weight[1,0]"}, ValueError, r"shape \(1, 2\)"),
        (ONE_UNIT, {"lr": -1.0}, ValueError, "lr must be > 0"),
        (ONE_UNIT, {"eps": 0.0}, ValueError, "eps must be > 0"),
        (nn.Sequential(nn.Linear(2, 1, rng=0), nn.Dropout()), {}, ValueError, "Dropout; supported"),
        (
            nn.Sequential(nn.Sigmoid(), nn.Linear(2, 1, rng=0)),
            {},
            ValueError,
            "not follow a Linear",
        ),
        (nn.Linear(2, 1, rng=0), {}, TypeError, "needs a chainrule.nn.Sequential"),
    ],
)
def test_bad_input_names_the_problem(model, kwargs, error, message):
    arguments = {"x": [1.0, 2.0], "y": [1.0], **kwargs}
    with pytest.raises(error, match=message):
        explain(model, **arguments)


@pytest.mark.parametrize("precision", [0, 18, 2.5, True])
def test_precision_outside_1_to_17_digits_is_refused(precision):
    e = explain(nn.Sequential(nn.Linear(2, 1, rng=0)), [1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="precision must be an integer from 1 to 17"):
        e.format(precision=precision)


# ---- the command line -------------------------------------------------------------------------
@pytest.fixture
def run_cli(monkeypatch, capsys):
    if explain_command not in cli.COMMANDS:
        monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, explain_command])

    def run(*argv):
        status = cli.main(["explain", *argv])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def test_cli_without_arguments_explains_the_tutorials_network(run_cli):
    t = tutorial_first_epoch()
    status, out, _ = run_cli()
    assert status == 0
    assert "Sequential(Linear(2, 1), Sigmoid)" in out
    assert re.search(r"^  L +\= 0\.1864 ", out, re.MULTILINE)
    assert f"= {t['dw'][0, 0]:#.4g}" in out
    assert "0.9586 × 0.03966 × 1.000 = 0.03802" in out


def test_cli_json_holds_the_tutorials_numbers(run_cli):
    t = tutorial_first_epoch()
    status, out, _ = run_cli("--json")
    data = json.loads(out)
    assert status == 0
    assert data["loss"] == pytest.approx(t["loss"], rel=1e-12)
    np.testing.assert_allclose(data["grad"]["0.weight"], t["dw"].T.tolist(), rtol=1e-12)
    assert data["updated"]["0.bias"] == pytest.approx(t["new_bias"].tolist(), rel=1e-12)


def test_cli_options_reach_the_explanation(run_cli):
    options = ["--weight", "0.bias", "--precision", "6", "--lr", "0.5", "--step"]
    status, out, _ = run_cli("--input", "1,1", "--target", "0", *options)
    assert status == 0
    assert "∂L/∂b[0] = ∂L/∂a · ∂a/∂z · ∂z/∂b = 0.958630 × 0.0396586 × 1.00000 = 0.0380179" in out
    assert "0.bias[0] ← 0.978738 − 0.5 × 0.0380179 = 0.959729" in out


def test_cli_explains_a_saved_model(run_cli, tmp_path):
    io = pytest.importorskip("chainrule.io")
    model = nn.Sequential(nn.Linear(2, 3, rng=0), nn.Tanh(), nn.Linear(3, 2, rng=1))
    io.save(model, tmp_path / "model.safetensors")
    data = ["--input", "0,1;1,0", "--target", "1;0", "--loss", "cross_entropy", "--json"]
    status, out, _ = run_cli(str(tmp_path / "model.safetensors"), *data)
    expected = explain(model, [[0, 1], [1, 0]], np.array([1, 0]), loss="cross_entropy")
    assert status == 0
    np.testing.assert_allclose(
        json.loads(out)["grad"]["2.weight"], expected.grad["2.weight"].tolist(), rtol=1e-12
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input", "0,x"], "--input: expected numbers"),
        (["--loss", "nope"], "invalid choice: 'nope'"),
        (["--weight", "0.weight[5,5]"], "not an element of 0.weight"),
        (["model.safetensors"], "needs --input and --target"),
    ],
)
def test_cli_errors_are_one_line_with_status_2(run_cli, argv, message):
    status, out, err = run_cli(*argv)
    assert status == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1
