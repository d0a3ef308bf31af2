"""Primitive operations: each takes NumPy arrays and returns `(out, backward)`.

`backward(g)` is the op's vector-Jacobian product: given g = dL/d(out) it returns dL/d(input) for
each input (None where an input has no gradient). Gradients may keep the broadcast shape; the engine
in `chainrule.tensor` sums them back to each input's shape.
"""

from chainrule.ops.activations import (
    gelu,
    leaky_relu,
    log_softmax,
    relu,
    sigmoid,
    softmax,
    softplus,
    tanh,
)
from chainrule.ops.conv import adaptive_avg_pool2d, avg_pool2d, conv1d, conv2d, max_pool2d
from chainrule.ops.elementwise import (
    abs,
    add,
    cast,
    clip,
    div,
    exp,
    log,
    maximum,
    minimum,
    mul,
    neg,
    pow,
    pow_scalar,
    sqrt,
    sub,
    where,
)
from chainrule.ops.linalg import linear, matmul
from chainrule.ops.losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    huber_loss,
    mse_loss,
)
from chainrule.ops.norm import batch_norm
from chainrule.ops.reduce import max, mean, sum
from chainrule.ops.shape import concatenate, getitem, reshape, stack, transpose

__all__ = [
    "abs",
    "adaptive_avg_pool2d",
    "avg_pool2d",
    "batch_norm",
    "conv1d",
    "conv2d",
    "max_pool2d",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "huber_loss",
    "mse_loss",
    "add",
    "cast",
    "clip",
    "concatenate",
    "div",
    "exp",
    "gelu",
    "getitem",
    "leaky_relu",
    "linear",
    "log",
    "log_softmax",
    "matmul",
    "max",
    "maximum",
    "mean",
    "minimum",
    "mul",
    "neg",
    "pow",
    "pow_scalar",
    "relu",
    "reshape",
    "sigmoid",
    "softmax",
    "softplus",
    "sqrt",
    "stack",
    "sub",
    "sum",
    "tanh",
    "transpose",
    "where",
]
