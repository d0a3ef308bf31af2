"""The text of an Explanation: the walk back from the loss in the founding tutorial's notation,
every product written out with its numbers, and the verdicts on its finite-difference checks.
The numbers themselves come from `chainrule.explain`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from chainrule.registry import ACTIVATIONS, LOSSES

if TYPE_CHECKING:  # the records this module writes; chainrule.explain imports this module
    from chainrule.explain import Chain, ConvSum, Explanation, Layer

# Activation class name -> (its name in formulas, its derivative as the text writes it).
_NAMES = {entry.module.__name__: (name, entry.derivative) for name, entry in ACTIVATIONS.items()}


def kink_at_or_after(layers: dict[str, Layer], index: int) -> bool:
    """Whether nudging anything in layer `index` may push a ReLU input there or later over 0."""
    return any(layer.kink.any() for layer in layers.values() if layer.index >= index)


def compare(analytic: float, numeric: float, loss: float, eps: float = 1e-6) -> tuple[str, float]:
    """('agrees' | 'mismatch' | 'tiny' | 'unchecked', relative error) of a gradient and its
    central difference.

    A central difference in float64 carries an absolute error of about ε·|L|/eps (the rounding of
    L, ε = 2.2e-16, over a step of eps: ~2e-10 for eps = 1e-6), whatever the gradient's size. A
    gradient well above that is checked relatively (1e-5); one within it cannot be checked at
    all — 2.22e-10 against 2.07e-10 is noise, not agreement — and is reported as 'tiny'.
    """
    if np.isnan(numeric):
        return "unchecked", float("nan")
    difference, size = abs(analytic - numeric), max(abs(analytic), abs(numeric))
    relative = difference / size if size > 0 else 0.0
    noise = 4 * np.finfo(np.float64).eps * max(1.0, abs(loss)) / eps
    if size <= noise:
        return "tiny", relative  # within the differences' own rounding: no evidence either way
    agrees = difference <= noise + 1e-5 * size
    return ("agrees" if agrees else "mismatch"), relative


_VERDICTS = {
    "agrees": "agrees",
    "tiny": "too small to check: within the differences' own rounding",
    "mismatch": "MISMATCH",
    "unchecked": "not computed",
    "kink": "at the kink: finite differences are not meaningful here",
}


class Writer:
    """Writes an Explanation in the tutorial's notation, with `precision` significant digits."""

    def __init__(self, e: Explanation, precision: int) -> None:
        if type(precision) is not int or not 1 <= precision <= 17:  # (a bool is no digit count)
            raise ValueError(f"precision must be an integer from 1 to 17, got {precision!r}")
        self.e, self.p, self.n = e, precision, len(e.x)
        self.L = "L_0" if self.n > 1 else "L"  # vectors are sample 0's, of its own loss
        self.lines: list[str] = []

    def num(self, v: float) -> str:
        return f"{float(v) + 0.0:#.{self.p}g}"  # + 0.0 turns -0.0 into 0.0

    def factor(self, v: float) -> str:
        return f"({self.num(v)})" if v < 0 else self.num(v)

    def vec(self, v: np.ndarray) -> str:
        items = [self.vec(x) if v.ndim > 1 else self.num(x) for x in v]
        return "[" + ", ".join(items if len(items) <= 8 else [*items[:6], "…", items[-1]]) + "]"

    def block(self, rows: list[tuple[str, str]]) -> None:
        width = max(len(left) for left, _ in rows)
        self.lines += [f"  {left.ljust(width)} = {right}" for left, right in rows]

    def text(self, step: bool) -> str:
        e, n = self.e, self.n
        loss = f"loss {e.loss_name}: L = {LOSSES[e.loss_name].formula}"
        self.lines = [f"The chain rule for {e.model}, {loss}."]
        if n > 1:
            self.lines.append(
                f"A batch of {n} samples: L = (1/{n})·Σ_n L_n, so every gradient is the average of "
                "the per-sample gradients ∂L_n/∂θ.\nVectors are sample 0's: gradients of its own "
                "loss L_0; ∂L/∂W and ∂L/∂b are batch averages; to_dict() has every sample."
            )
        self.forward()
        self.lines += ["", "Backward, from the loss one layer at a time"]
        for layer in reversed(e.layers.values()):
            self.backward(layer)
        for conv in e.convolutions:
            self.convolution(conv)
        if step:
            self.update()
        return "\n".join(self.lines)

    def forward(self) -> None:
        e, last = self.e, len(self.e.layers)
        self.lines += ["", "Forward" + (" (sample 0)" if self.n > 1 else "")]
        if e.features is None:
            rows = [("a^[0] = x", self.vec(e.x[0]))]
        else:  # a CNN: the dense head starts from the flattened features
            self.lines.append(f"  features: x {tuple(e.x.shape[1:])} through {e.features}")
            first = next(iter(e.layers.values()))
            rows = [("a^[0] = flatten(features(x))", self.vec(first.a_prev[0]))]
        for layer in e.layers.values():
            l, f = layer.index, _NAMES[layer.activation][0]
            rows.append((f"z^[{l}] = W^[{l}]·a^[{l - 1}] + b^[{l}]", self.vec(layer.z[0])))
            output = f"a^[{l}] = {f}(z^[{l}])" + (" = ŷ" if l == last else "")
            rows.append((output, self.vec(layer.a[0])))
        target = f"class {e.y[0]}" if e.y.ndim == 1 else self.vec(e.y[0])
        shown = [self.num(v) for v in e.sample_losses[:8]] + (["…"] if self.n > 8 else [])
        per_sample = f"   (L_n: {', '.join(shown)})" if self.n > 1 else ""
        self.block([*rows, ("y", target), ("L", self.num(e.loss) + per_sample)])

    def backward(self, layer: Layer) -> None:
        e, n, l, L = self.e, self.n, layer.index, self.L
        f, derivative = _NAMES[layer.activation]
        names = [p for p in e.parameters if p.rsplit(".", 1)[0] == layer.name]
        self.lines += ["", f"Layer {l}: Linear '{layer.name}' then {f} ({', '.join(names)})"]
        if l == len(e.layers):
            per_output = e.loss_name != "cross_entropy" and layer.a.shape[1] > 1
            upstream = LOSSES[e.loss_name].gradient + (
                " (over K outputs: /K)" if per_output else ""
            )
        else:
            upstream = f"Σ_k ∂{L}/∂z^[{l + 1}]_k · W^[{l + 1}]_kj"
        rows = [(f"∂{L}/∂a^[{l}] = {upstream}", self.vec(n * layer.dL_da[0]))]
        if layer.da_dz.ndim == 2:
            rows.append((f"∂a^[{l}]/∂z^[{l}] = {derivative}", self.vec(layer.da_dz[0])))
            rule = f"∂{L}/∂a^[{l}] ⊙ ∂a^[{l}]/∂z^[{l}]"
        else:
            rule = f"Σ_k ∂{L}/∂a_k · ∂a_k/∂z_j, ∂a_k/∂z_j = {derivative}"
        rows.append((f"∂{L}/∂z^[{l}] = {rule}", self.vec(n * layer.dL_dz[0])))
        dz = f"mean_n ∂L_n/∂z^[{l}]" if n > 1 else f"∂L/∂z^[{l}]"
        for name in names:
            weight = name.endswith("weight")
            rule = f"{dz} ⊗ a^[{l - 1}]" if weight else dz
            rows.append((f"∂L/∂{'W' if weight else 'b'}^[{l}] = {rule}", self.vec(e.grad[name])))
        self.block(rows)
        self.check(layer, names)
        for chain in (c for c in e.chains if c.layer == layer.name):
            self.chain(chain, layer)

    def check(self, layer: Layer, names: list[str]) -> None:
        pairs = [(layer.dL_da, layer.numeric_dL_da), (layer.dL_dz, layer.numeric_dL_dz)]
        pairs += [(self.e.grad[name], self.e.numeric[name]) for name in names]
        results = [
            compare(a, v, self.e.loss, self.e.eps)
            for analytic, numeric in pairs
            for a, v in zip(analytic.ravel(), numeric.ravel())
        ]
        checked = [r for r in results if r[0] not in ("unchecked", "tiny")]
        tiny = sum(status == "tiny" for status, _ in results)
        rest = (
            " (the rest not differenced: a large model)"
            if len(checked) + tiny < len(results)
            else ""
        )
        if tiny:
            rest += f"; {tiny} too small to check (within the differences' own rounding)"
        if not checked:
            self.lines.append(f"  finite differences: none here{rest}")
            return
        bad = sum(status == "mismatch" for status, _ in checked)
        verdict = f"{bad} of {len(checked)} disagree" if bad else "all agree"
        if bad and kink_at_or_after(self.e.layers, layer.index):
            verdict += " — at the kink: finite differences are not meaningful here"
        worst = max(relative for _, relative in checked)
        self.lines.append(
            f"  finite differences of these {len(checked)} numbers: {verdict} "
            f"(largest relative error {worst:.1e}){rest}"
        )

    def chain(self, c: Chain, layer: Layer) -> None:
        n, l, j, L = self.n, layer.index, c.index[0], self.L
        symbol = "W" if c.parameter.endswith("weight") else "b"
        element = f"{symbol}[{','.join(map(str, c.index))}]"
        source = f"a^[{l - 1}]_{c.index[1]}" if symbol == "W" else "the constant 1"
        self.lines.append(f"  {element} ({_element(c)}) connects {source} to z^[{l}]_{j}:")
        if c.backprop is not None:
            total = self.num(sum(g * w for g, w in c.backprop))
            sum_ = " + ".join(f"{self.factor(g)} × {self.factor(w)}" for g, w in c.backprop)
            rule = f"Σ_k ∂{L}/∂z^[{l + 1}]_k · W^[{l + 1}]_k{j}"
            self.lines.append(f"    ∂{L}/∂a_{j} = {rule} = {sum_} = {total}")
        if c.dL_da is None:  # Softmax: every output a_k depends on z_j
            pairs = zip(n * layer.dL_da[0], layer.da_dz[0, :, j])
            sum_ = " + ".join(f"{self.factor(g)} × {self.factor(d)}" for g, d in pairs)
            rule = f"Σ_k ∂{L}/∂a_k · ∂a_k/∂z_{j}"
            self.lines.append(f"    ∂{L}/∂z_{j} = {rule} = {sum_} = {self.num(c.dL_dz[0])}")
            rule, factors = "∂{0}/∂z · ∂z/∂", [c.dL_dz, c.dz_dw]
        else:
            rule, factors = "∂{0}/∂a · ∂a/∂z · ∂z/∂", [c.dL_da, c.da_dz, c.dz_dw]
        for s in range(n) if n <= 8 else [0, 1, 2, n - 1]:
            loss = f"L_{s}" if n > 1 else "L"
            product = " × ".join(self.factor(f[s]) for f in factors)
            left = (f"n={s}: " if n > 1 else "") + f"∂{loss}/∂{element}"
            self.lines.append(
                f"    {left} = {rule.format(loss)}{symbol} = {product} = {self.num(c.terms[s])}"
            )
        if n > 1:
            terms = " + ".join(map(self.factor, c.terms)) if n <= 8 else f"Σ_n ∂L_n/∂{element}"
            self.lines.append(f"    ∂L/∂{element} = (1/{n})·({terms}) = {self.num(c.value)}")
        self.lines.append(
            f"    finite difference {self.num(c.numeric)}, relative error "
            f"{c.relative_error:.1e}: {_VERDICTS[c.status]}"
        )

    def convolution(self, c: ConvSum) -> None:
        """A convolution weight's gradient: one term per output position its window touched."""
        axes = len(c.positions[0])
        o, ch, offsets = c.index[0], c.channel, c.index[2:]
        names = "yx" if axes == 2 else "x"
        reads = ", ".join(
            f"{v}·{s}+{i}·{d}−{p}"
            for v, s, i, d, p in zip(names, c.stride, offsets, c.dilation, c.pad)
        )
        element = f"W[{','.join(map(str, c.index))}]"
        where = ",".join(names)
        self.lines += [
            "",
            f"Convolution '{c.layer}': {c.description} ({c.parameter})",
            "  One weight is shared by every output position, so its gradient sums over the "
            "positions its window touched:",
            f"  ∂L/∂{element} = Σ_n Σ_({where}) ∂L/∂z[n,{o},{where}] · a_prev[n,{ch},{reads}]"
            + ("   (a_prev is 0 in the padding)" if not c.inside.all() else ""),
            f"  {len(c.positions)} positions per sample, {int((~c.inside).sum())} of them in the "
            "padding (adding 0); shown: the terms with ∂L/∂z ≠ 0 (pooling and ReLU pass gradient "
            "only where they let the value through)",
        ]
        n = len(c.terms)
        for s in range(n) if n <= 4 else [0, 1, n - 1]:
            terms = [
                f"{self.factor(g)} × {self.factor(a)}"
                for g, a, inside in zip(c.dL_dz[s], c.a_prev[s], c.inside)
                if inside and g != 0
            ]
            shown = " + ".join(terms[:3]) + (
                f" + … ({len(terms) - 3} more)" if len(terms) > 3 else ""
            )
            shown = shown or "0 (no position passes gradient back)"
            self.lines.append(f"    n={s}: Σ_({where}) = {shown} = {self.num(c.terms[s])}")
        if n > 4:
            self.lines.append("    …")
        total = " + ".join(map(self.factor, c.terms)) if n <= 4 else f"the {n} sums"
        self.lines.append(
            f"  ∂L/∂{element} = {total} = {self.num(c.terms.sum())} "
            f"(the engine's backward: {self.num(c.value)})"
        )
        self.lines.append(
            f"  finite difference {self.num(c.numeric)}, relative error "
            f"{c.relative_error:.1e}: {_VERDICTS[c.status]}"
        )

    def update(self) -> None:
        e = self.e
        self.lines += ["", f"One gradient-descent step, w ← w − η·∂L/∂w with η = {e.lr:g}"]
        for c in e.chains:
            before, after = e.parameters[c.parameter][c.index], e.updated[c.parameter][c.index]
            self.lines.append(
                f"  {_element(c)} ← {self.num(before)} − {e.lr:g} × {self.factor(c.value)} = "
                f"{self.num(after)}"
            )
        arrows = [(p, f"{self.vec(e.parameters[p])} → {self.vec(e.updated[p])}") for p in e.updated]
        self.block(arrows)


def _element(chain: Chain) -> str:
    return f"{chain.parameter}[{','.join(map(str, chain.index))}]"
