"""The founding tutorial's XOR example, reproduced exactly with chainrule — then fixed.

The tutorial trains one sigmoid unit on XOR with NumPy: np.random.seed(0), weights randn(2, 1),
bias randn(1), learning rate 0.1, full batch, loss mean(½(a − y)²), 10 000 epochs. Here the same
model is a chainrule `Linear(2, 1)` + `Sigmoid` with the same initial values (float64, as NumPy
uses), the same loss and the same update (`optim.SGD` is w ← w − η ∂L/∂w), so it prints the
tutorial's lines digit for digit. Run: python examples/seed_xor.py
"""

import numpy as np

import chainrule as cr
import chainrule.functional as F
from chainrule import nn, optim

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
y = np.array([[0], [1], [1], [0]], dtype=np.float64)


def tutorial_loss(a, target):
    """The tutorial's L = mean(½ (a − y)²): PyTorch-style MSE is mean((a − y)²), hence the ½."""
    return 0.5 * F.mse_loss(a, target)


def train(model, lr, epochs, log_every):
    optimizer = optim.SGD(model.parameters(), lr=lr)
    for epoch in range(epochs):
        optimizer.zero_grad()
        loss = tutorial_loss(model(X), y)
        loss.backward()  # the chain rule, layer by layer from the output back
        optimizer.step()  # w ← w − η ∂L/∂w for every weight and bias
        if epoch % log_every == 0:
            print(f"Epoch {epoch}, Loss: {loss.item():.4f}")


def accuracy(model):
    with cr.no_grad():
        return float(np.mean((model(X).data >= 0.5) == y))


def tutorial_network():
    """One sigmoid unit holding the tutorial's initial values (np.random.seed(0), without touching
    the global state: a RandomState(0) draws the same numbers)."""
    state = np.random.RandomState(0)
    weights, bias = state.randn(2, 1), state.randn(1)
    unit = nn.Linear(2, 1, dtype=np.float64)
    unit.weight.data[...] = weights.T  # chainrule stores W as (out, in); the tutorial as (in, out)
    unit.bias.data[...] = bias
    return nn.Sequential(unit, nn.Sigmoid())


def main():
    print("The tutorial's network: one sigmoid unit, learning rate 0.1, 10 000 epochs")
    single = tutorial_network()
    train(single, lr=0.1, epochs=10_000, log_every=1_000)
    print(f"accuracy: {accuracy(single):.4f}")
    print(
        "Why it fails: one sigmoid unit can only draw a single straight line through the input "
        "plane, and no line puts (0, 1) and (1, 0) on one side and (0, 0) and (1, 1) on the other. "
        "The best gradient descent can then do is predict about 0.5 for every input, which is "
        "where the loss stalls at 0.1250."
    )
    print()
    print("The fix: a hidden layer of 4 sigmoid units, same loss and plain gradient descent")
    hidden = nn.Sequential(
        nn.Linear(2, 4, dtype=np.float64, rng=0),
        nn.Sigmoid(),
        nn.Linear(4, 1, dtype=np.float64, rng=1),
        nn.Sigmoid(),
    )
    train(hidden, lr=2.0, epochs=10_000, log_every=1_000)
    print(f"accuracy: {accuracy(hidden):.4f}")


if __name__ == "__main__":
    main()
