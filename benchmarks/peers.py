"""The peers: the same training step written in chainrule, PyTorch, scikit-learn and plain NumPy.

Each `make_*` builds a model for a workload and returns a Runner whose `run(n)` trains about n steps
and returns how many it trained. A peer that does not apply (or is not installed) raises
`Unavailable` with the reason, which the report prints instead of a number.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from workloads import Data, Workload


class Unavailable(Exception):
    """This peer cannot run this workload; the message says why."""


class Runner:
    """`run(n)` trains n steps (sklearn: whole epochs, so at least n), returns the steps trained."""

    def __init__(
        self,
        run: Callable[[int], int],
        check: Callable[[], dict] | None = None,
        parameters: Callable[[], list[np.ndarray]] | None = None,
    ) -> None:
        self.run = run
        self.check = check  # chainrule only: the dtypes that one step produced
        # chainrule and numpy: the weights and biases, layer by layer (to show they train alike)
        self.parameters = parameters


# ---- chainrule -------------------------------------------------------------------------------
def _chainrule_model(workload: Workload) -> tuple[Any, Any, Callable]:
    import chainrule.functional as F
    from chainrule import nn, optim

    dtype = np.dtype(workload.dtype)
    rng = np.random.default_rng(1)
    layers: list[Any] = []
    for i, (n_in, n_out) in enumerate(workload.layers):
        layers.append(nn.Linear(n_in, n_out, dtype=dtype, rng=rng))
        last = i == len(workload.layers) - 1
        if workload.activation == "sigmoid":
            layers.append(nn.Sigmoid())
        elif not last:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    if workload.optimizer == "sgd":
        optimizer = optim.SGD(model.parameters(), lr=workload.lr)
    else:
        optimizer = optim.Adam(model.parameters(), lr=workload.lr)
    loss_fn = F.mse_loss if workload.loss == "mse" else F.cross_entropy
    return model, optimizer, loss_fn


def make_chainrule(workload: Workload, data: Data) -> Runner:
    """The loop users write: zero_grad, loss of the model's output, backward, step."""
    model, opt, loss_fn = _chainrule_model(workload)
    batches = data.batches
    count = len(batches)

    def run(n: int) -> int:
        for i in range(n):
            x, y = batches[i % count]
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
        return n

    def check() -> dict:
        x, y = batches[0]
        opt.zero_grad()
        output = model(x)
        loss = loss_fn(output, y)
        loss.backward()
        opt.step()
        state = [  # the float state; "step" is a count (a 0-d int64 array shared by a flat group)
            a
            for s in opt.state.values()
            for key, a in s.items()
            if isinstance(a, np.ndarray) and key != "step"
        ]
        seen = {
            "output": output.dtype,
            "loss": loss.dtype,
            "parameters": {p.dtype for p in model.parameters()},
            "gradients": {p.grad.dtype for p in model.parameters() if p.grad is not None},
            "optimizer_state": {a.dtype for a in state},
        }
        return {
            key: sorted(str(d) for d in (v if isinstance(v, set) else {v}))
            for key, v in seen.items()
        }

    return Runner(run, check, lambda: [p.data for p in model.parameters()])


def make_chainrule_fit(workload: Workload, data: Data) -> Runner:
    """`chainrule.fit` over the same batches, in order (shuffle=False, so that the data each
    step sees matches the eager loop's and only the loop's own bookkeeping differs)."""
    import chainrule

    model, opt, _ = _chainrule_model(workload)
    per_epoch = len(data.batches)

    def run(n: int) -> int:
        epochs = max(1, math.ceil(n / per_epoch))
        chainrule.fit(
            model,
            data.x,
            data.y,
            loss=workload.loss,
            optimizer=opt,
            epochs=epochs,
            batch_size=workload.batch,
            shuffle=False,
            progress=False,
            log_every=None,
        )
        return epochs * per_epoch

    return Runner(run)


# ---- PyTorch ---------------------------------------------------------------------------------
def make_torch(workload: Workload, data: Data, threads: int | None = None) -> Runner:
    """Eager PyTorch on the CPU, with as many intra-op threads as NumPy's BLAS uses."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as error:
        raise Unavailable(f"PyTorch is not installed ({error})") from None
    if threads:
        torch.set_num_threads(threads)
    dtype = getattr(torch, workload.dtype)
    torch.manual_seed(1)
    layers: list[Any] = []
    for i, (n_in, n_out) in enumerate(workload.layers):
        layers.append(torch.nn.Linear(n_in, n_out, dtype=dtype))
        last = i == len(workload.layers) - 1
        if workload.activation == "sigmoid":
            layers.append(torch.nn.Sigmoid())
        elif not last:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    if workload.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=workload.lr)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=workload.lr)
    loss_fn = F.mse_loss if workload.loss == "mse" else F.cross_entropy
    batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in data.batches]
    count = len(batches)

    def run(n: int) -> int:
        for i in range(n):
            x, y = batches[i % count]
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
        return n

    return Runner(run)


# ---- scikit-learn ----------------------------------------------------------------------------
def make_sklearn(workload: Workload, data: Data) -> Runner:
    """MLPClassifier (MLPRegressor for XOR) trained by `fit` with warm_start, `max_iter` epochs a
    call, over the same batches in order; steps = epochs × batches per epoch.

    Where it differs from the other peers (its design, not our choice): XOR's output unit is the
    identity under squared loss (MLPRegressor has no output activation); the 2-class network has
    one logistic output (sklearn's binary case), not two softmax logits; sklearn also computes the
    loss of every batch and checks convergence every epoch, which is part of what it costs.
    """
    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier, MLPRegressor
    except ImportError as error:
        raise Unavailable(f"scikit-learn is not installed ({error})") from None
    if workload.activation == "relu" and workload.loss != "cross_entropy":
        raise Unavailable("MLPClassifier pairs ReLU layers only with its log-loss")
    x, y = data.x, data.y
    options: dict[str, Any] = {
        "hidden_layer_sizes": workload.sizes[1:-1],
        "batch_size": workload.batch,
        "shuffle": False,
        "learning_rate_init": workload.lr,
        "alpha": 0.0,
        "tol": 0.0,
        "n_iter_no_change": 2**31 - 1,
        "warm_start": True,
        "random_state": 1,
        "max_iter": 1,
    }
    if workload.optimizer == "sgd":
        options.update(
            solver="sgd", momentum=0.0, nesterovs_momentum=False, learning_rate="constant"
        )
    else:
        options.update(solver="adam", epsilon=1e-8)
    if workload.loss == "mse":
        model = MLPRegressor(activation="logistic", **options)
        y = y.ravel()
    else:
        model = MLPClassifier(activation=workload.activation, **options)
    per_epoch = len(data.batches)

    def run(n: int) -> int:
        epochs = max(1, math.ceil(n / per_epoch))
        model.set_params(max_iter=epochs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x, y)
        return epochs * per_epoch

    return Runner(run)


# ---- plain NumPy (the floor) -----------------------------------------------------------------
def make_numpy(workload: Workload, data: Data) -> Runner:
    """The same network by hand: forward, the chain rule written out, an in-place update.

    No graph, no objects, no checks: what is left is the arithmetic every peer must do, so this is
    the floor the others are measured against.
    """
    dtype = np.dtype(workload.dtype)
    rng = np.random.default_rng(1)
    weights, biases = [], []
    for n_in, n_out in workload.layers:
        bound = 1.0 / math.sqrt(n_in)
        weights.append(rng.uniform(-bound, bound, (n_out, n_in)).astype(dtype))
        biases.append(rng.uniform(-bound, bound, n_out).astype(dtype))
    params = [p for pair in zip(weights, biases) for p in pair]
    adam = workload.optimizer == "adam"
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params] if adam else []
    sigmoid = workload.activation == "sigmoid"
    batches = data.batches
    lr, last, count = workload.lr, len(weights) - 1, len(batches)
    t = 0

    def step(x: np.ndarray, y: np.ndarray) -> None:
        nonlocal t
        activations = [x]
        a = x
        for i, (W, b) in enumerate(zip(weights, biases)):
            z = a @ W.T  # (batch, out)
            z += b
            if sigmoid:
                a = 1.0 / (1.0 + np.exp(-z))
            elif i < last:
                a = np.maximum(z, 0, out=z)
            else:
                a = z
            activations.append(a)
        n = len(x)
        if workload.loss == "mse":
            g = (a - y) * (2.0 / a.size)
            g *= a * (1.0 - a)
        else:  # dL/dz = (softmax(z) − onehot(y)) / batch
            g = a - a.max(axis=1, keepdims=True)
            np.exp(g, out=g)
            g /= g.sum(axis=1, keepdims=True)
            g[np.arange(n), y] -= 1.0
            g *= 1.0 / n
        grads = []
        for i in range(last, -1, -1):
            a_prev = activations[i]
            grads.append((g.T @ a_prev, g.sum(axis=0)))
            if i:
                g = g @ weights[i]
                if sigmoid:
                    g *= a_prev * (1.0 - a_prev)
                else:
                    g *= a_prev > 0
        flat = [array for pair in reversed(grads) for array in pair]
        if not adam:
            for p, grad in zip(params, flat):
                grad *= lr
                p -= grad
            return
        t += 1
        step_size = lr * math.sqrt(1.0 - 0.999**t) / (1.0 - 0.9**t)
        for p, grad, (m, v) in zip(params, flat, moments):
            m *= 0.9
            m += 0.1 * grad
            v *= 0.999
            grad *= grad
            grad *= 0.001
            v += grad
            np.sqrt(v, out=grad)
            grad += 1e-8 * math.sqrt(1.0 - 0.999**t)
            np.divide(m, grad, out=grad)
            grad *= step_size
            p -= grad

    def run(n: int) -> int:
        for i in range(n):
            step(*batches[i % count])
        return n

    return Runner(run, parameters=lambda: params)


PEERS: dict[str, Callable[..., Runner]] = {
    "chainrule": make_chainrule,
    "pytorch": make_torch,
    "sklearn": make_sklearn,
    "numpy": make_numpy,
}
FIT_PEERS: dict[str, Callable[..., Runner]] = {
    "chainrule": make_chainrule,
    "chainrule.fit": make_chainrule_fit,
}
