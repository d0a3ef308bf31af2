"""explain on a CNN: the chain-rule walk through the dense head from the flattened features, and a
convolution weight's gradient as the sum over the positions its window touched, checked by finite
differences and against the engine."""

from __future__ import annotations

import numpy as np
import pytest

from chainrule import nn
from chainrule.explain import explain

CONVS = {
    "same": lambda rng: nn.Conv2d(2, 4, 3, padding="same", dtype="float64", rng=rng),
    "stride, padding": lambda rng: nn.Conv2d(
        2, 4, 3, stride=2, padding=1, dtype="float64", rng=rng
    ),
    "dilation, valid": lambda rng: nn.Conv2d(2, 4, (2, 3), dilation=2, dtype="float64", rng=rng),
    "groups": lambda rng: nn.Conv2d(2, 4, 3, padding=(1, 0), groups=2, dtype="float64", rng=rng),
}


def small_cnn(conv, rng, shape=(2, 7, 7)) -> nn.Sequential:
    layers = [conv, nn.Tanh(), nn.AvgPool2d(2, 1), nn.Flatten()]
    features = nn.Sequential(*layers)(np.zeros((1, *shape))).shape[1]
    head = [nn.Linear(features, 5, dtype="float64", rng=rng), nn.Tanh()]
    head += [nn.Linear(5, 3, dtype="float64", rng=rng)]
    return nn.Sequential(*layers, *head)


@pytest.mark.parametrize("name", CONVS)
@pytest.mark.parametrize("element", [(0, 0, 0, 0), (3, 1, 1, 2)])
def test_a_conv_weights_gradient_is_the_sum_over_the_positions_it_touched(name, element):
    rng = np.random.default_rng(0)
    model = small_cnn(CONVS[name](rng), rng)
    x, y = rng.normal(size=(3, 2, 7, 7)), np.array([0, 2, 1])
    kernel = model[0].kernel_size
    element = element[:2] + tuple(min(i, k - 1) for i, k in zip(element[2:], kernel))
    if name == "groups":
        element = (element[0], 0, *element[2:])
    e = explain(
        model, x, y, loss="cross_entropy", weight=f"0.weight[{','.join(map(str, element))}]"
    )
    (conv,) = e.convolutions
    assert conv.index == element
    np.testing.assert_allclose(conv.terms.sum(), conv.value, rtol=1e-12, atol=1e-15)
    assert conv.status == "agrees", (conv.value, conv.numeric)
    # The sum, written out by hand from the engine's a_prev and ∂L/∂z.
    z_grad_total = conv.dL_dz * conv.a_prev
    assert np.isclose(z_grad_total.sum(), conv.value)
    assert "sums over the positions" in e.format()


def test_the_dense_head_starts_from_the_flattened_features():
    rng = np.random.default_rng(1)
    model = small_cnn(CONVS["same"](rng), rng)
    x = rng.normal(size=(2, 2, 7, 7))
    e = explain(model, x, np.array([1, 0]), loss="cross_entropy")
    first = next(iter(e.layers.values()))
    np.testing.assert_array_equal(first.a_prev, model[:4](x).data)
    assert [layer.name for layer in e.layers.values()] == ["4", "6"]
    assert [c.parameter for c in e.chains] == ["4.weight", "6.weight"]
    assert [c.parameter for c in e.convolutions] == ["0.weight"]  # the default: W[0,0,0,0]
    assert all(c.status in ("agrees", "tiny") for c in e.chains)
    text = e.format()
    assert "a^[0] = flatten(features(x))" in text and "Convolution '0'" in text


def test_a_conv1d_weight_is_explained_too():
    rng = np.random.default_rng(2)
    conv = nn.Conv1d(2, 3, 3, stride=2, padding=1, dtype="float64", rng=rng)
    model = nn.Sequential(conv, nn.Tanh(), nn.Flatten(), nn.Linear(12, 2, dtype="float64", rng=rng))
    e = explain(model, rng.normal(size=(2, 2, 8)), np.array([[0.5, -1.0], [1.0, 0.0]]), "mse")
    (c,) = e.convolutions
    assert c.status == "agrees" and np.isclose(c.terms.sum(), c.value)


def test_a_weight_of_another_layer_kind_is_refused():
    rng = np.random.default_rng(3)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, dtype="float64", rng=rng),
        nn.BatchNorm2d(2, dtype="float64"),
        nn.Flatten(),
        nn.Linear(8, 2, dtype="float64", rng=rng),
    )
    with pytest.raises(ValueError, match="not a weight of a Linear or a convolution"):
        explain(model, np.zeros((2, 1, 4, 4)), np.array([0, 1]), "cross_entropy", weight="1.weight")
