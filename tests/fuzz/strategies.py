"""Hypothesis strategies: network pairs, renderings, mutations, domains, specs, CLI options."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext

import numpy as np
from hypothesis import strategies as st

from .domains import JSON_MANGLES, VNNLIB_MANGLES, DomainSpec, Interval
from .nets import (
    DELTAS,
    EXTRAS,
    MUTATIONS,
    RELATIONS,
    STYLES,
    NetSpec,
    Rendering,
    net_from_arrays,
    relate,
)
from .oracle import SpecChoice

NAMES = (("x", "y"), ("W0", "B0"), ("relu0", "y"), ("input", "W1"), ("x", "relu1"))


@dataclass(frozen=True)
class Pair:
    """Two recipes (``b`` derived from ``a`` by ``relation``) and how each is written."""

    a: NetSpec
    b: NetSpec
    relation: str
    ra: Rendering
    rb: Rendering

    @property
    def in_dim(self) -> int:
        return self.a.in_dim


weights = st.one_of(
    st.integers(-16, 16).map(lambda k: k / 8),
    st.floats(-2, 2, width=32, allow_subnormal=False),
)


@st.composite
def net_specs(draw, in_dim: int, out_dim: int, max_hidden: int = 2, max_width: int = 4) -> NetSpec:
    """A ReLU network in_dim -> (1..max_hidden layers of 1..max_width units) -> out_dim."""
    widths = [in_dim] + draw(st.lists(st.integers(1, max_width), min_size=1,
                                      max_size=max_hidden)) + [out_dim]
    ws, bs = [], []
    for i in range(len(widths) - 1):
        n_out, n_in = widths[i + 1], widths[i]
        ws.append(np.array(draw(st.lists(weights, min_size=n_out * n_in, max_size=n_out * n_in)))
                  .reshape(n_out, n_in))
        bs.append(np.array(draw(st.lists(weights, min_size=n_out, max_size=n_out))))
    return net_from_arrays(ws, bs)


@st.composite
def renderings(draw, n_layers: int) -> Rendering:
    return Rendering(
        dtype=draw(st.sampled_from(("float32", "float64"))),
        styles=tuple(draw(st.lists(st.sampled_from(STYLES), min_size=n_layers, max_size=n_layers))),
        extras=tuple(draw(st.lists(st.sampled_from(EXTRAS), min_size=n_layers, max_size=n_layers))),
        batch=draw(st.sampled_from(("1", "1", "N"))),
        opset=draw(st.sampled_from((13, 17))),
        names=draw(st.sampled_from(NAMES)),
    )


@st.composite
def pairs(draw, max_in: int = 4, max_out: int = 3) -> Pair:
    in_dim = draw(st.integers(1, max_in))
    out_dim = draw(st.integers(1, max_out))
    net = draw(net_specs(in_dim, out_dim))
    relation = draw(st.sampled_from(RELATIONS))
    other = draw(net_specs(in_dim, out_dim)) if relation == "independent" else None
    a, b = relate(net, relation, pick=draw(st.integers(0, 50)), delta=draw(st.sampled_from(DELTAS)),
                  other=other)
    return Pair(a, b, relation, draw(renderings(len(a.layers))), draw(renderings(len(b.layers))))


@dataclass(frozen=True)
class Mutation:
    kind: str
    which: str  # "a" or "b"
    target: int
    variant: int


mutations = st.builds(Mutation, st.sampled_from(sorted(MUTATIONS)), st.sampled_from("ab"),
                      st.integers(0, 3), st.integers(0, 7))

# ---------------------------------------------------------------------------------------------
# domains

SPECIAL_DECIMALS = ("0", "1", "-1", "0.5", "0.25", "0.1", "0.3", "0.7000673", "-0.2", "2", "1e-3",
                    "3e-8", "0.70006730000000001", "-0.75", "0.999999999999999999")
EXTREME_DECIMALS = ("1e400", "-1e400", "1e300", "1e301", "1e-400", "1" + "0" * 400, "1e-30")
WIDTHS = ("1", "0.5", "2", "1e-3", "0.1", "1e-9", "1e-17", "1e-30", "0")


def _exact_decimal(f: float) -> str:
    return format(Decimal(f), "f") if abs(f) >= 1e-6 or f == 0 else str(Decimal(f))


decimals = st.one_of(
    st.sampled_from(SPECIAL_DECIMALS),
    st.builds(lambda k, e: f"{k}e{e}", st.integers(-999, 999), st.integers(-6, 0)),
    st.floats(-3, 3, width=32, allow_subnormal=False).map(_exact_decimal),
)


def _add(lo: str, w: str) -> str:
    with localcontext() as ctx:
        ctx.prec = 3000
        return str(Decimal(lo) + Decimal(w))


@st.composite
def intervals(draw, strict: bool = False, extreme: bool = False) -> Interval:
    lo = draw(st.one_of(decimals, st.sampled_from(EXTREME_DECIMALS)) if extreme else decimals)
    hi = _add(lo, draw(st.sampled_from(WIDTHS)))
    if extreme and draw(st.booleans()):
        hi = draw(st.sampled_from(EXTREME_DECIMALS))
        if Decimal(hi) < Decimal(lo):
            lo, hi = hi, lo
    ls = strict and draw(st.integers(0, 3)) == 0
    hs = strict and draw(st.integers(0, 3)) == 0
    if ls and hs and Decimal(lo) == Decimal(hi):
        hs = False
    return Interval(lo, hi, ls, hs)


@st.composite
def domain_specs(draw, dim: int, max_boxes: int = 1, strict: bool = False,
                 uniform: bool = False) -> DomainSpec:
    """``uniform``: one interval for every input (so ``LO:HI`` can express it)."""
    extreme = draw(st.integers(0, 9)) == 0
    n_boxes = draw(st.integers(1, max_boxes))
    boxes = []
    for _ in range(n_boxes):
        if uniform:
            iv = draw(intervals(strict=False, extreme=extreme))
            boxes.append((iv,) * dim)
        else:
            boxes.append(tuple(draw(intervals(strict=strict, extreme=extreme)) for _ in range(dim)))
    return DomainSpec(tuple(boxes))


TOLERANCES = ("0", "1e-6", "0.001", "0.1", "0.3", "1", "2.5e-3", "0.0001220703125", "1e-30")
spec_choices = st.one_of(
    st.just(SpecChoice("strict")),
    st.builds(SpecChoice, st.just("epsilon"), st.one_of(st.sampled_from(TOLERANCES), decimals.map(
        lambda d: d.lstrip("-"))), st.sampled_from(("linf", "l1"))),
    st.just(SpecChoice("argmax")),
)
bound_methods = st.sampled_from(("interval", "interval", "symbolic", "lp", "exact"))

vnnlib_mangles = st.sampled_from(VNNLIB_MANGLES)
json_mangles = st.sampled_from(JSON_MANGLES)
