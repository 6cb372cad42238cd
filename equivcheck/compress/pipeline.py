"""Lossless compression of stable ReLU units (Serra, Kumar & Ramalingam, CPAIOR 2020).

Given the exact stability analysis of :mod:`equivcheck.bounds.stability`, the passes below build a
smaller network that computes the same function on the domain. They run in this order, each on
the previous one's result:

1. **remove stably inactive units** (their ReLU outputs 0 on the domain): drop the unit and the
   next layer's column for it. No weight changes.
2. **collapse to a constant** when a hidden layer is entirely stably inactive: the output is then
   the constant the remaining layers compute from 0 (exact rational arithmetic).
3. **fold linearly dependent stably active units**: if the incoming row ``[w_i, b_i]`` of an
   active unit is an exact rational combination ``sum_j a_j [w_j, b_j] + a_0 [0, 1]`` of other
   active units of the layer (and the constant), then ``h_i = sum_j a_j h_j + a_0`` on the domain,
   so the next layer absorbs it. Dependence is found modulo a large prime (independence there
   implies independence over the rationals) and every fold is verified in exact arithmetic.
4. **fold a layer whose units are all stably active** into the next one (``W' = W_{k+1} W_k``,
   exactly), when that does not increase the parameter count.

Folding recomputes weights as exact rationals, which the ONNX file stores rounded to its element
type. The result therefore carries a proof: :func:`equivcheck.solve.prover.prove` of the original
against the compressed model *re-imported from the exported ONNX*, in strict mode when only
removals happened (the stored weights are the original ones), otherwise in epsilon mode with a
rigorous upper bound of the deviation caused by that rounding, which the proof then confirms.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from equivcheck.bounds.propagation import LayerBounds
from equivcheck.bounds.stability import StabilityReport, UnitStatus, analyze_stability
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Domain
from equivcheck.core.network import Affine, Layer, Network, fraction_array, nearest_float_array
from equivcheck.core.result import ProofResult
from equivcheck.io.domains import parse_domain
from equivcheck.io.onnx_import import ModelLike, load_model, load_network

PRIME = 2_147_483_647  # 2^31 - 1
MAX_EXACT_BASIS = 160  # larger dependent sets are not folded (exact solve too slow)
DEFAULT_TIMEOUT = 120.0
FOLD_PROOF_SECONDS = 30.0  # time given to the epsilon proof of folded weights (at most)
ANALYSIS_SHARE = 0.4  # of the time left after loading: the stability analysis
FOLD_PROOF_SHARE = 0.5  # of the time left then: the epsilon proof of folded weights
FOLD_MAX_RELATIVE_EPSILON = 1e-4  # folds needing a larger epsilon (x output scale) are dropped


@dataclass(frozen=True)
class LayerCompression:
    """One row of the per-layer table (``layer`` indexes the original network's layers)."""

    layer: int
    relu: bool
    units_before: int
    removed_inactive: int
    folded_active: int
    units_after: int
    params_before: int
    params_after: int
    folded_into_next: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class CompressionResult:
    """What :func:`compress` returns.

    ``compressed`` is the network re-imported from the exported ONNX (what was proved);
    ``proof`` is ``None`` only when verification was switched off; ``epsilon`` is the tolerance
    proved (``None`` for a strict proof); ``exact`` says whether the stored weights equal the
    exactly recomputed ones (then a strict proof is attempted).
    """

    original: Network
    compressed: Network
    onnx_model: object
    table: tuple[LayerCompression, ...]
    stability: StabilityReport
    proof: ProofResult | None
    exact: bool
    epsilon: Fraction | None
    collapsed: bool
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def hidden_before(self) -> int:
        return sum(r.units_before for r in self.table if r.relu)

    @property
    def hidden_after(self) -> int:
        return sum(r.units_after for r in self.table if r.relu)

    @property
    def unit_compression(self) -> float:
        """Percentage of hidden units removed (the seed's "compression")."""
        return 100.0 * (1 - self.hidden_after / self.hidden_before) if self.hidden_before else 0.0

    @property
    def param_compression(self) -> float:
        before = self.original.num_parameters
        return 100.0 * (1 - self.compressed.num_parameters / before) if before else 0.0

    def to_dict(self) -> dict:
        return {
            "model": self.original.source,
            "original": self.original.description,
            "compressed": self.compressed.description,
            "hidden_units_before": self.hidden_before,
            "hidden_units_after": self.hidden_after,
            "unit_compression_percent": round(self.unit_compression, 3),
            "parameters_before": self.original.num_parameters,
            "parameters_after": self.compressed.num_parameters,
            "parameter_compression_percent": round(self.param_compression, 3),
            "collapsed_to_constant": self.collapsed,
            "weights_exact": self.exact,
            "epsilon": None if self.epsilon is None else str(self.epsilon),
            "epsilon_float": None if self.epsilon is None else float(self.epsilon),
            "table": [r.to_dict() for r in self.table],
            "stability": self.stability.to_dict(),
            "proof": None if self.proof is None else self.proof.to_dict(),
            "seconds": round(self.seconds, 4),
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------------------
# the working representation: exact rational layers with the bounds of their pre-activations


@dataclass
class _WLayer:
    # exact weights: float64 arrays while they are the stored floats (exact values, converted
    # to rationals only where a fold needs them: see _exact), else object arrays of Fraction
    w: np.ndarray  # (out, in)
    b: np.ndarray  # (out,)
    relu: bool
    name: str
    origin: int  # index of the original layer whose units these are
    units: list[int]  # original unit indices kept
    lower: np.ndarray  # sound bounds of the pre-activations (float)
    upper: np.ndarray
    status: list[UnitStatus] | None
    recomputed: bool = False  # weights changed from the stored ones


def _exact(values: np.ndarray) -> np.ndarray:
    """``values`` as an object array of Fractions (float arrays are converted exactly)."""
    return values if values.dtype == object else fraction_array(values)


def _exact_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact product of object arrays of Fractions (integer arithmetic when denominators allow)."""
    if a.size == 0 or b.size == 0:
        return np.zeros((a.shape[0], b.shape[1] if b.ndim == 2 else 0), dtype=object) + Fraction(0)
    da = math.lcm(*[v.denominator for v in a.ravel()])
    db = math.lcm(*[v.denominator for v in b.ravel()])
    ai = np.array([v.numerator * (da // v.denominator) for v in a.ravel()], dtype=object).reshape(a.shape)
    bi = np.array([v.numerator * (db // v.denominator) for v in b.ravel()], dtype=object).reshape(b.shape)
    prod = ai.dot(bi)
    den = da * db
    out = np.empty(prod.shape, dtype=object)
    out.ravel()[:] = [Fraction(int(v), den) for v in prod.ravel()]
    return out


def _working(net: Network, report: StabilityReport, bounds: list[LayerBounds]) -> list[_WLayer]:
    out = []
    for k, layer in enumerate(net.layers):
        rep = report.layer(k) if layer.relu else None
        exact_float = layer.affine.is_exact_float
        out.append(_WLayer(
            w=layer.weight.copy() if exact_float else layer.affine.rational_weight().copy(),
            b=layer.bias.copy() if exact_float else layer.affine.rational_bias().copy(),
            relu=layer.relu, name=layer.name or f"layer{k}", origin=k,
            units=list(range(layer.out_dim)), lower=bounds[k].lower.copy(),
            upper=bounds[k].upper.copy(), status=list(rep.status) if rep else None,
        ))
    return out


def _drop_units(layers: list[_WLayer], k: int, keep: list[int]) -> None:
    cur = layers[k]
    cur.w, cur.b = cur.w[keep], cur.b[keep]
    cur.units = [cur.units[i] for i in keep]
    cur.lower, cur.upper = cur.lower[keep], cur.upper[keep]
    cur.status = [cur.status[i] for i in keep] if cur.status is not None else None
    nxt = layers[k + 1]
    nxt.w = nxt.w[:, keep]


def _remove_inactive(layers: list[_WLayer]) -> dict[int, int]:
    removed = {}
    for k, lay in enumerate(layers[:-1]):
        if not lay.relu:
            continue
        keep = [i for i, s in enumerate(lay.status) if s is not UnitStatus.INACTIVE]
        removed[lay.origin] = len(lay.units) - len(keep)
        _drop_units(layers, k, keep)
    return removed


def _collapse(layers: list[_WLayer], in_dim: int) -> list[_WLayer] | None:
    """If some hidden layer has no unit left, the network is constant: one affine layer."""
    empty = [k for k, lay in enumerate(layers[:-1]) if lay.relu and len(lay.units) == 0]
    if not empty:
        return None
    k = empty[0]
    h = np.zeros(0, dtype=object)
    for lay in layers[k + 1:]:
        z = (_exact(lay.w).dot(h) if h.size else np.array([Fraction(0)] * len(lay.b), dtype=object)) + _exact(lay.b)
        h = np.array([v if v > 0 else Fraction(0) for v in z], dtype=object) if lay.relu else z
    last = layers[-1]
    w = np.empty((len(h), in_dim), dtype=object)
    w.fill(Fraction(0))
    return [_WLayer(w=w, b=h, relu=False, name="constant", origin=last.origin, units=last.units,
                    lower=last.lower, upper=last.upper, status=None,
                    recomputed=any(lay.recomputed for lay in layers) or k + 1 < len(layers) - 1)]


def _int_rows(rows: np.ndarray) -> list[list[int]]:
    out = []
    for row in rows:
        den = math.lcm(*[v.denominator for v in row]) if len(row) else 1
        out.append([int(v.numerator * (den // v.denominator)) for v in row])
    return out


def _solve_exact(m: list[list[Fraction]], rhs: list[Fraction]) -> list[Fraction] | None:
    """Solve the square system ``m a = rhs`` exactly (None if singular)."""
    n = len(m)
    aug = [list(m[i]) + [rhs[i]] for i in range(n)]
    for c in range(n):
        p = next((r for r in range(c, n) if aug[r][c] != 0), None)
        if p is None:
            return None
        aug[c], aug[p] = aug[p], aug[c]
        inv = 1 / aug[c][c]
        aug[c] = [v * inv for v in aug[c]]
        for r in range(n):
            if r != c and aug[r][c] != 0:
                f = aug[r][c]
                aug[r] = [x - f * y for x, y in zip(aug[r], aug[c])]
    return [aug[i][n] for i in range(n)]


def _fold_dependent(layers: list[_WLayer], notes: list[str],
                    deadline: Deadline | None = None) -> dict[int, int]:
    """Fold stably active units whose augmented rows depend exactly on other active units
    (as many as ``deadline`` leaves time for; a fold is all or nothing per unit)."""
    folded = {}
    for k, lay in enumerate(layers[:-1]):
        if not lay.relu:
            continue
        active = [i for i, s in enumerate(lay.status) if s is UnitStatus.ACTIVE]
        folded[lay.origin] = 0
        if not active:
            continue
        if deadline is not None and deadline.expired():
            notes.append(f"layer {lay.origin}: active units not examined for folding (time limit)")
            continue
        n_in = lay.w.shape[1]
        const = np.array([Fraction(0)] * n_in + [Fraction(1)], dtype=object)
        w_act, b_act = _exact(lay.w[active]), _exact(lay.b[active])
        rows = [const] + [np.concatenate([w_act[r], [b_act[r]]]) for r in range(len(active))]
        ints = _int_rows(np.array(rows, dtype=object))
        # Gaussian elimination modulo PRIME, one row at a time
        basis: list[tuple[int, np.ndarray, int]] = []  # (row index, reduced row, pivot column)
        dependent = []
        for r, row in enumerate(ints):
            v = np.array([x % PRIME for x in row], dtype=np.int64)
            for _, brow, piv in basis:
                if v[piv]:
                    v = (v - v[piv] * brow) % PRIME
            nzs = np.flatnonzero(v)
            if len(nzs) == 0:
                dependent.append(r)
                continue
            piv = int(nzs[0])
            v = (v * pow(int(v[piv]), PRIME - 2, PRIME)) % PRIME
            basis.append((r, v, piv))
        if not dependent:
            continue
        if len(basis) > MAX_EXACT_BASIS:
            notes.append(f"layer {lay.origin}: {len(dependent)} possibly dependent active units not "
                         f"folded (exact basis of {len(basis)} rows too large)")
            continue
        brows = [r for r, _, _ in basis]
        pivs = [p for _, _, p in basis]
        # the basis rows restricted to the pivot columns are nonsingular mod p, hence over Q
        m = [[rows[br][p] for br in brows] for p in pivs]
        removed = []
        next_w, next_b = _exact(layers[k + 1].w).copy(), _exact(layers[k + 1].b).copy()
        for r in dependent:
            if deadline is not None and deadline.expired():
                notes.append(f"layer {lay.origin}: folding stopped by the time limit")
                break
            a = _solve_exact(m, [rows[r][p] for p in pivs])
            if a is None:
                continue
            combo = sum((a[t] * rows[br] for t, br in enumerate(brows)), np.zeros(n_in + 1, dtype=object))
            if not all(x == y for x, y in zip(combo, rows[r])):
                continue  # dependent modulo p only
            i = active[r - 1]
            col = next_w[:, i].copy()
            for t, br in enumerate(brows):
                if a[t] == 0:
                    continue
                if br == 0:
                    next_b = next_b + a[t] * col
                else:
                    j = active[br - 1]
                    next_w[:, j] = next_w[:, j] + a[t] * col
            removed.append(i)
        if removed:
            layers[k + 1].w, layers[k + 1].b = next_w, next_b
            layers[k + 1].recomputed = True
            keep = [i for i in range(len(lay.units)) if i not in set(removed)]
            _drop_units(layers, k, keep)
            folded[lay.origin] = len(removed)
    return folded


def _fold_layers(layers: list[_WLayer],
                 deadline: Deadline | None = None) -> tuple[list[_WLayer], set[int]]:
    """Fold every hidden layer whose units are all stably active into the next layer (while
    ``deadline`` leaves time)."""
    out = list(layers)
    folded: set[int] = set()
    k = 0
    while k < len(out) - 1:
        lay, nxt = out[k], out[k + 1]
        if deadline is not None and deadline.expired():
            break
        if lay.relu and lay.status and all(s is UnitStatus.ACTIVE for s in lay.status):
            n_out, n_mid, n_in = nxt.w.shape[0], lay.w.shape[0], lay.w.shape[1]
            before = lay.w.size + lay.b.size + nxt.w.size + nxt.b.size
            if n_out * n_in + n_out <= before:
                nw, lw, lb, nb = _exact(nxt.w), _exact(lay.w), _exact(lay.b), _exact(nxt.b)
                w = _exact_dot(nw, lw)
                b = _exact_dot(nw, lb.reshape(-1, 1)).ravel() + nb if n_mid else nb
                merged = _WLayer(w=w, b=b, relu=nxt.relu, name=f"{lay.name}+{nxt.name}",
                                 origin=nxt.origin, units=nxt.units, lower=nxt.lower,
                                 upper=nxt.upper, status=nxt.status, recomputed=True)
                folded.add(lay.origin)
                out[k:k + 2] = [merged]
                continue
        k += 1
    return out, folded


def _to_network(net: Network, layers: list[_WLayer]) -> Network:
    out = []
    for lay in layers:
        if lay.w.dtype != object and lay.b.dtype != object:  # the stored floats: exact
            out.append(Layer(Affine(lay.w.copy(), lay.b.copy()), lay.relu, lay.name))
            continue
        wf, bf = nearest_float_array(lay.w), nearest_float_array(lay.b)
        exact = all(Fraction(float(x)) == x for x in lay.w.ravel()) and all(
            Fraction(float(x)) == x for x in lay.b.ravel())
        aff = Affine(wf, bf) if exact else Affine(wf, bf, lay.w, lay.b)
        out.append(Layer(aff, lay.relu, lay.name))
    return net.with_layers(out, note=None)


def _deviation_bound(layers: list[_WLayer], stored: Network, lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
    """Per layer, rigorous upper bounds of |stored pre-activation - exact pre-activation|.

    ``exact`` is the compressed network with its exact rational weights (equal to the original
    on the domain), ``stored`` the same structure with the weights as stored in the ONNX file.
    Recursion: |z' - z| <= |W'| d_prev + |W' - W| max|h_prev| + |b' - b|, ReLU is 1-Lipschitz.
    Float sums are inflated by a relative 1e-9 and an absolute 1e-300, far above their error.
    """
    d = np.zeros(len(lo))
    hmax = np.maximum(np.abs(lo), np.abs(hi))
    out = []
    for lay, st in zip(layers, stored.layers):
        dw, db = _stored_error(lay.w, st.weight), _stored_error(lay.b, st.bias)
        d = (np.abs(st.weight) @ d + dw @ hmax + db) * (1 + 1e-9) + 1e-300
        out.append(d)
        hmax = np.maximum(np.abs(lay.lower), np.abs(lay.upper))
        if lay.relu:
            hmax = np.maximum(lay.upper, 0.0)
        hmax = hmax + d  # the stored network's values may exceed the exact bounds by d
    return out


def _stored_error(exact: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """Upper bounds of ``|exact - stored|`` elementwise (zero where the stored floats are the
    exact values)."""
    if exact.dtype != object and np.array_equal(exact, stored):
        return np.zeros(stored.shape)
    return np.abs(nearest_float_array(_exact(exact) - fraction_array(stored))) * (1 + 2**-50)


def _round_up_decimal(x: float) -> Fraction:
    """A short decimal >= x (two significant digits), as an exact Fraction."""
    if x <= 0:
        return Fraction(0)
    e = math.floor(math.log10(x)) - 1
    q = Fraction(math.ceil(Fraction(x) / Fraction(10) ** e)) * Fraction(10) ** e
    while q < Fraction(x):
        q += Fraction(10) ** e
    return q


@dataclass
class _Candidate:
    layers: list[_WLayer]
    onnx_model: object
    stored: Network
    exact: bool
    epsilon: Fraction | None
    deviation: list[np.ndarray]
    removed: dict[int, int]
    folded_units: dict[int, int]
    folded_layers: set[int]
    collapsed: bool


def _build(net: Network, report: StabilityReport, bounds: list[LayerBounds], dom: Domain,
           fold: bool, notes: list[str], deadline: Deadline | None = None) -> _Candidate:
    from equivcheck.io.onnx_export import to_onnx

    layers = _working(net, report, bounds)
    removed = _remove_inactive(layers)
    collapsed_layers = _collapse(layers, net.in_dim)
    folded_units: dict[int, int] = {}
    folded_layers: set[int] = set()
    if collapsed_layers is not None:
        layers = collapsed_layers
    elif fold:
        folded_units = _fold_dependent(layers, notes, deadline)
        layers, folded_layers = _fold_layers(layers, deadline)
    exact_net = _to_network(net, layers)
    onnx_model, stored_exact = to_onnx(exact_net, graph_name="equivcheck_compressed")
    stored = load_network(onnx_model, name="<compressed>")
    exact = stored_exact and not any(lay.recomputed for lay in layers)
    epsilon, deviation = None, [np.zeros(len(lay.b)) for lay in layers]
    if not exact:
        per_box = [_deviation_bound(layers, stored, b.lower_float(), b.upper_float()) for b in dom.boxes]
        deviation = [np.max(np.array([pb[k] for pb in per_box]), axis=0) for k in range(len(layers))]
        dev = float(np.max(deviation[-1])) if deviation[-1].size else 0.0
        epsilon = _round_up_decimal(dev) if dev > 0 else Fraction(0)
    return _Candidate(layers, onnx_model, stored, exact, epsilon, deviation, removed, folded_units,
                      folded_layers, collapsed_layers is not None)


def _remember(net: Network, dom: Domain, cand: _Candidate) -> None:
    """Hand the proved bounds of the compressed network (as stored) to the prover."""
    from equivcheck.bounds.propagation import remember_bounds

    if cand.collapsed:
        return
    bounds = [LayerBounds(lay.lower - d, lay.upper + d) for lay, d in zip(cand.layers, cand.deviation)]
    for box in dom.boxes:
        remember_bounds(cand.stored, box.lower_float(), box.upper_float(), bounds)


def compress(
    model: ModelLike | Network,
    domain: "str | Domain | None" = None,
    output: str | Path | None = None,
    verify: bool = True,
    timeout: float | Deadline = DEFAULT_TIMEOUT,
    samples: np.ndarray | None = None,
    bounds_method: str = "exact",
) -> CompressionResult:
    """Compress ``model`` losslessly on ``domain`` and (unless ``verify`` is False) prove it.

    ``timeout`` (seconds, or a :class:`~equivcheck.core.deadline.Deadline` handed down) bounds the
    whole call: the stability analysis gets ``ANALYSIS_SHARE`` of the time left after loading,
    folding stops at the deadline, and the proof gets what remains (UNKNOWN when nothing does).
    When folding recomputed weights and the epsilon proof does not come back PROVED in time, the
    folds are dropped and the removal-only network (which keeps the stored weights) is proved
    strictly instead; the notes say so. The bounds the analysis proved are handed to the prover
    (``bounds="exact"``), so removed units are constants there too and, thanks to the prover's
    unit sharing, a removal-only proof is immediate. Writes the ONNX file to ``output`` when
    given. Raises an :class:`~equivcheck.errors.InputError` for bad models or domains.
    """
    from equivcheck.bounds.propagation import remember_bounds

    start = time.monotonic()
    deadline = Deadline.of(timeout)
    proto = model if isinstance(model, Network) else load_model(model)
    label = None if isinstance(model, Network) or hasattr(model, "SerializeToString") else str(model)
    net = model if isinstance(model, Network) else load_network(proto, name=label)
    dom = parse_domain(domain, net.in_dim)
    report = analyze_stability(net, dom, timeout=deadline.sub(ANALYSIS_SHARE), samples=samples)
    bounds = _report_bounds(net, dom, report)
    for box in dom.boxes:
        remember_bounds(net, box.lower_float(), box.upper_float(), bounds)
    notes: list[str] = []
    cand = _build(net, report, bounds, dom, fold=True, notes=notes, deadline=deadline)
    if cand.collapsed:
        notes.append("a hidden layer is stably inactive on the whole domain: the network is constant")
    proof = None
    if verify:
        from equivcheck.solve.prover import prove

        src = net if isinstance(model, Network) else proto
        _remember(net, dom, cand)

        def run(c: _Candidate, budget: Deadline) -> ProofResult:
            if c.epsilon is None or c.epsilon == 0:
                return prove(src, c.onnx_model, domain=dom, mode="strict", timeout=budget,
                             bounds=bounds_method)
            return prove(src, c.onnx_model, domain=dom, mode="epsilon", tolerance=c.epsilon,
                         norm="linf", timeout=budget, bounds=bounds_method)

        folded = sum(cand.folded_units.values()) + len(cand.folded_layers)
        if cand.exact or not folded:
            proof = run(cand, deadline)
        else:
            scale = max(1.0, float(np.max(np.abs(np.concatenate([bounds[-1].lower, bounds[-1].upper])))))
            if cand.epsilon is not None and cand.epsilon > FOLD_MAX_RELATIVE_EPSILON * scale:
                why = (f"the rigorous bound on the rounding of the folded weights is {float(cand.epsilon):.3g}, "
                       f"above {FOLD_MAX_RELATIVE_EPSILON:g} x the output scale {scale:.3g}")
                proof = None
            else:
                proof = run(cand, deadline.sub(FOLD_PROOF_SHARE, seconds=FOLD_PROOF_SECONDS))
                why = f"the epsilon proof ({cand.epsilon}) came back {proof.verdict.label} ({proof.reason})"
            if proof is None or not proof.proved:
                fallback = _build(net, report, bounds, dom, fold=False, notes=[])
                _remember(net, dom, fallback)
                fb_proof = run(fallback, deadline)
                notes.append(
                    f"folding {folded} stably active unit(s)/layer(s) changed weights; {why}; so the "
                    "folds were dropped and the removal-only network (stored weights unchanged) "
                    "was proved instead"
                )
                cand, proof = fallback, fb_proof
    if output is not None:
        import onnx

        onnx.save(cand.onnx_model, str(output))
    stored = cand.stored if output is None else load_network(cand.onnx_model, name=str(output))
    table = _table(net, stored, cand.layers, cand.removed, cand.folded_units, cand.folded_layers,
                   cand.collapsed)
    if report.undecided:
        notes.append(f"{len(report.undecided)} unit(s) left undecided by the time limit were kept")
    return CompressionResult(
        original=net, compressed=stored, onnx_model=cand.onnx_model, table=table, stability=report,
        proof=proof, exact=cand.exact, epsilon=None if cand.exact else cand.epsilon,
        collapsed=cand.collapsed, seconds=time.monotonic() - start, notes=tuple(notes),
    )


def _report_bounds(net: Network, dom: Domain, report: StabilityReport) -> list[LayerBounds]:
    """Sound bounds over the whole domain (the union of the boxes' symbolic bounds; for one box,
    the bounds the analysis ended with)."""
    from equivcheck.bounds.propagation import symbolic_bounds

    if report.bounds is not None and len(dom.boxes) == 1:
        return report.clip(list(report.bounds))
    out = None
    for box in dom.boxes:
        b = symbolic_bounds(net, box.lower_float(), box.upper_float())
        out = b if out is None else [
            LayerBounds(np.minimum(x.lower, y.lower), np.maximum(x.upper, y.upper)) for x, y in zip(out, b)
        ]
    # units proved stable by later stages: the proof, not these bounds, is what makes them so
    return report.clip(out)


def _table(net, stored, layers, removed, folded_units, folded_layers, collapsed) -> tuple[LayerCompression, ...]:
    rows = []
    by_origin = {lay.origin: (idx, lay) for idx, lay in enumerate(layers)}
    for k, layer in enumerate(net.layers):
        before = layer.weight.size + layer.bias.size
        if k in by_origin:
            idx, lay = by_origin[k]
            after_units = len(lay.b)
            params_after = stored.layers[idx].weight.size + stored.layers[idx].bias.size
        else:
            after_units, params_after = 0, 0
        rows.append(LayerCompression(
            layer=k, relu=layer.relu, units_before=layer.out_dim,
            removed_inactive=removed.get(k, 0), folded_active=folded_units.get(k, 0),
            units_after=after_units, params_before=before, params_after=params_after,
            folded_into_next=k in folded_layers,
        ))
    return tuple(rows)
