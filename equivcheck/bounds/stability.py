"""Exact stability analysis of every ReLU unit over an input domain (as in LEO, Serra et al.).

Each hidden unit ends as (see :class:`~equivcheck.core.options.UnitStability`)

* ``INACTIVE``: its pre-activation is ``<= 0`` on the whole domain (the ReLU outputs 0), proved;
* ``ACTIVE``: its pre-activation is ``>= 0`` on the whole domain (the ReLU is the identity), proved;
* ``UNSTABLE``: two inputs in the domain are known, one where the pre-activation is ``> 0`` and one
  where it is ``< 0``, both checked in exact rational arithmetic on the stored weights;
* ``UNDECIDED``: the time limit came first (such units must be kept as unstable).

Cheap stages first, and each records what it decided: rigorous interval bounds, rigorous
symbolic (CROWN-style) bounds, concrete witnesses (random points, box vertices picked by the
symbolic bounds, optional training samples), LP bounds certified from HiGHS' duals (whose primal
points are more witness candidates), and finally an exact stage (:class:`ExactSearch`): input
splitting (injected by the caller, see :data:`InputSplitter`), or a branch and bound over the
phases of earlier unstable units in which every pruned node is an LP bound certified from its
dual (so a "stable" verdict rests only on rigorous bounds), and whose LP points are checked
exactly as witnesses. Units of the first hidden layer
are decided exactly by evaluating the maximising / minimising vertex of the box in rational
arithmetic. The stages live in :mod:`~equivcheck.bounds.stability_state` (bookkeeping, witness
search) and :mod:`~equivcheck.bounds.stability_exact`; the report types in
:mod:`~equivcheck.bounds.stability_report`.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

import numpy as np

from equivcheck.bounds.interval import intersect, interval_bounds, interval_step
from equivcheck.bounds.lp import lp_tighten_layer
from equivcheck.bounds.stability_exact import branch_and_bound, first_layer_exact
from equivcheck.bounds.stability_report import StabilityReport, Stage
from equivcheck.bounds.stability_state import (
    AnalysisState,
    UnitVerdicts,
    _local_search,
    union_witnesses,
)
from equivcheck.bounds.symbolic import back_substitute, symbolic_layer
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box, Domain
from equivcheck.core.matrix import csr, is_sparse
from equivcheck.core.network import Network
from equivcheck.core.options import DEFAULT_TIMEOUT, UnitStability
from equivcheck.core.progress import Progress, ProgressFn, report
from equivcheck.errors import InputError
from equivcheck.io.domains import parse_domain

RANDOM_POINTS = 512
VERTEX_ENTRIES = 4_000_000  # vertex witnesses of at most this many (units x inputs) per layer
WITNESS_ENTRIES = 40_000_000  # candidate witnesses x hidden units evaluated at once (320 MB of
# pre-activations): a CNN's 57,888 units and 25,000 vertices took 14 GB without this cap
SPLIT_MAX_INPUTS = 16  # ExactSearch.AUTO splits the input box up to this many inputs

InputSplitter = Callable[[AnalysisState], None]
"""The exact stage by input splitting: decides (proves with :meth:`AnalysisState.proved_stable`,
or witnesses through :meth:`AnalysisState.try_witnesses`) the open questions of a state by
bounding a cover of its box by sub-boxes. It lives above this layer because its bounds are the
engine's batched ones (``bounds/`` may not import ``engine/``): the caller passes
:func:`equivcheck.engine.units.split_inputs` (``compress`` does). Without one, AUTO runs the
branch and bound for every network and INPUT_SPLIT is an :class:`~equivcheck.errors.InputError`.
"""


class ExactSearch(str, enum.Enum):
    """The exact stage that runs after the bound and witness stages."""

    AUTO = "auto"  # input splitting (when a splitter is given) for at most SPLIT_MAX_INPUTS
    # inputs, else branch and bound
    INPUT_SPLIT = "input-split"  # bisect the input box, batched bounds on every sub-box
    BRANCH_AND_BOUND = "branch-and-bound"  # over the phases of earlier units, certified LPs
    NONE = "none"  # the cheap stages only

    @classmethod
    def parse(cls, value: ExactSearch | bool | str) -> ExactSearch:
        """``value`` as an :class:`ExactSearch` (True is AUTO, False is NONE); an
        :class:`InputError` naming the choices if it is none of them."""
        if isinstance(value, cls):
            return value
        if isinstance(value, bool):
            return cls.AUTO if value else cls.NONE
        try:
            return cls(str(value))
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise InputError(f"unknown exact search {value!r} (one of {choices})") from None


def analyze_stability(
    net: Network,
    domain: str | Domain | None = None,
    timeout: float | Deadline = DEFAULT_TIMEOUT,
    samples: np.ndarray | None = None,
    seed: int = 0,
    use_lp: bool = True,
    exact: ExactSearch | bool | str = ExactSearch.AUTO,
    splitter: InputSplitter | None = None,
    progress: ProgressFn | None = None,
) -> StabilityReport:
    """Classify every ReLU unit of ``net`` over ``domain`` (default ``[0, 1]`` on every input).

    Soundness: ACTIVE / INACTIVE verdicts rest only on rigorous bounds (interval, symbolic, LP
    bounds certified from duals, exact vertex evaluation for the first layer, certified input
    splitting or branch and bound); UNSTABLE verdicts on two exactly checked witness points inside
    the domain. Units not decided within ``timeout`` seconds (or by the :class:`Deadline` given)
    are UNDECIDED; ``timeout`` 0 runs the cheap bound stages only, NaN, infinite or negative
    values raise an :class:`~equivcheck.errors.InputError`. ``samples`` (n, in_dim) are extra
    witness candidates, e.g. training images (points outside the domain are ignored). ``use_lp``
    runs the certified LP stage; ``exact`` chooses the exact stage (see :class:`ExactSearch`);
    ``splitter`` is the input-splitting stage (:data:`InputSplitter`; none: no input splitting).
    ``progress`` gets a "stability" report (units decided and open) after each stage and after
    each layer of the symbolic one (on a CNN the stages before the splitting take a minute).
    For a domain of several boxes a unit is stable only if it is stable with the same phase on
    every box, and unstable if some box shows it unstable (or it is active on one box and
    inactive on another, with witnesses from both). One-box domains also report the sound bounds
    the analysis ended with (:attr:`StabilityReport.bounds`).
    """
    start = time.monotonic()
    deadline = Deadline.of(timeout, allow_zero=True)
    exact = ExactSearch.parse(exact)
    if exact is ExactSearch.INPUT_SPLIT and splitter is None:
        raise InputError("input splitting needs a splitter (equivcheck.engine.units.split_inputs)")
    dom = parse_domain(domain, net.in_dim)
    per_box = []
    stage_seconds: dict[str, float] = {}
    for box in dom.boxes:
        per_box.append(_analyze_box(net, box, deadline, samples, seed, use_lp, exact, splitter,
                                    stage_seconds, progress))
    if len(per_box) == 1:
        verdicts: UnitVerdicts = per_box[0]
        bounds = tuple(per_box[0].bounds) if per_box[0].bounds is not None else None
    else:
        verdicts = UnitVerdicts.combine(net, per_box)
        union_witnesses(net, dom, verdicts, seed, deadline)
        bounds = None
    return StabilityReport(verdicts.layer_reports(net), tuple(verdicts.witnesses), dom.describe(),
                           time.monotonic() - start, stage_seconds, bounds)


def _analyze_box(net: Network, box: Box, deadline: Deadline, samples, seed: int, use_lp: bool,
                 exact: ExactSearch, splitter: InputSplitter | None,
                 stage_seconds: dict[str, float], progress: ProgressFn | None = None
                 ) -> AnalysisState:
    """Run the stages on one box; time per stage is added to ``stage_seconds``."""
    split = splitter is not None and (exact is ExactSearch.INPUT_SPLIT
                                      or exact is ExactSearch.AUTO and net.in_dim <= SPLIT_MAX_INPUTS)
    st = AnalysisState(net, box, deadline)
    lo, hi = st.lo, st.hi
    clock = time.monotonic()
    total = net.num_relus

    def tell(detail: str) -> None:
        if progress is not None:
            left = st.open_units()
            report(progress, Progress("stability", total - left, left, "units",
                                      seconds_left=deadline.remaining(), detail=detail))

    def lap(name):
        nonlocal clock
        now = time.monotonic()
        stage_seconds[name] = stage_seconds.get(name, 0.0) + now - clock
        clock = now

    # 1. interval bounds
    st.bounds = bounds = interval_bounds(net, lo, hi)  # the analysis' own list
    st.record_bounds(Stage.INTERVAL)
    lap("interval")
    tell("interval bounds")
    # 2. symbolic bounds (layer by layer, each from the tightened earlier layers)
    vertices = []
    for k in range(1, len(net.layers)):
        if st.time_left() <= 0:
            break  # later layers keep their interval bounds
        bounds[k] = intersect(bounds[k], symbolic_layer(net, k, bounds, lo, hi, st.deadline))
        if k + 1 < len(net.layers):
            bounds[k + 1] = intersect(bounds[k + 1], interval_step(net, k + 1, bounds, lo, hi))
        if progress is not None:
            st.record_bounds(Stage.SYMBOLIC)
            tell(f"symbolic bounds, layer {k} of {len(net.layers) - 1}")
    st.record_bounds(Stage.SYMBOLIC)
    lap("symbolic")
    # 3. witnesses: vertices chosen by the linear bounds, random points, training samples
    if st.open_units() and st.time_left() > 0:
        tell("witness points: bound vertices, random points, local search")
        vlo = st.plo if st.plo is not None else lo
        vhi = st.phi if st.phi is not None else hi
        for k in st.relu_layers:
            if st.time_left() <= 0:
                break
            pos, neg = st.needs()[k]
            rows = np.flatnonzero(pos | neg)
            if len(rows) == 0:
                continue
            n = net.layers[k].out_dim
            rows = rows[:max(1, VERTEX_ENTRIES // (2 * net.in_dim))]  # a wide layer: the first
            m = len(rows)
            if net.layers[k].affine.is_sparse:  # sparse coefficients (see bounds.symbolic)
                c = csr((np.r_[np.ones(m), -np.ones(m)], (np.arange(2 * m), np.r_[rows, rows])),
                        shape=(2 * m, n))
            else:
                c = np.zeros((2 * m, n))
                c[np.arange(m), rows] = 1.0
                c[m + np.arange(m), rows] = -1.0
            _, nu = back_substitute(net, k, c, bounds, lo, hi)
            nu = nu.toarray() if is_sparse(nu) else nu
            vertices.append(np.where(nu > 0, vhi, vlo))
        rng = np.random.default_rng(seed)
        cand = list(vertices)
        n_rand = RANDOM_POINTS if net.in_dim > 64 else 16 * RANDOM_POINTS
        cand.append(vlo + rng.random((n_rand, net.in_dim)) * (vhi - vlo))
        cand.append(np.where(rng.random((RANDOM_POINTS, net.in_dim)) < 0.5, vlo, vhi))
        cand.append(((vlo + vhi) / 2)[None, :])
        if samples is not None and len(samples):
            s = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
            inside = np.all((s >= vlo) & (s <= vhi), axis=1)
            cand.append(s[inside])
        cand = _capped(np.vstack(cand), sum(net.layers[k].out_dim for k in st.relu_layers), rng)
        st.try_witnesses(cand)
        _local_search(st, cand, rng)
    lap("witness")
    tell("witness points done")
    # 4. first hidden layer: exact vertex evaluation decides every unit
    if st.relu_layers and st.relu_layers[0] == 0:
        first_layer_exact(st)
    # 5. LP bounds (certified), layer by layer, with their points as witness candidates; not
    # before input splitting, whose bounds on sub-boxes decide what the LPs would, far faster
    if use_lp and not split:
        for k in st.relu_layers:
            if k == 0 or st.time_left() <= 0:
                continue
            tell(f"LP bounds, layer {k}")
            bounds[k] = intersect(bounds[k], symbolic_layer(net, k, bounds, lo, hi, st.deadline))
            st.record_bounds(Stage.LP)
            if st.time_left() <= 0:
                continue
            if k == st.relu_layers[-1]:
                units = [i for i, s in enumerate(st.status[k]) if s is UnitStability.UNDECIDED]
            else:  # tighter bounds of unstable units here make every later LP tighter
                units = [i for i, s in enumerate(st.status[k]) if not s.stable]
            if units:
                pts: list[np.ndarray] = []
                bounds[k] = intersect(bounds[k], lp_tighten_layer(net, k, bounds, lo, hi, units,
                                                                  st.deadline, pts))
                st.record_bounds(Stage.LP)
                if pts:
                    st.try_witnesses(np.vstack(pts))
        lap("lp")
    # 6. exact: input splitting (few inputs, a splitter given) or certified branch and bound
    if split and st.open_units():
        splitter(st)
        lap("exact")
    if exact is ExactSearch.BRANCH_AND_BOUND or exact is ExactSearch.AUTO and not split:
        for k in st.relu_layers:
            if st.time_left() > 0:
                tell(f"branch and bound, layer {k}")
            for i in range(net.layers[k].out_dim):
                if st.status[k][i] is not UnitStability.UNDECIDED or st.time_left() <= 0:
                    continue
                for sign in (1, -1):
                    if st.status[k][i] is not UnitStability.UNDECIDED:
                        break
                    have = st.w_pos[k][i] if sign > 0 else st.w_neg[k][i]
                    if have is None:
                        branch_and_bound(st, k, i, sign)
        lap("exact")
    return st


def _capped(points: np.ndarray, units: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``WITNESS_ENTRIES // units`` (at least 64) of ``points``, an even random choice
    that keeps their order (the candidates' pre-activations are held at once)."""
    most = max(64, WITNESS_ENTRIES // max(units, 1))
    if len(points) <= most:
        return points
    return points[np.sort(rng.choice(len(points), most, replace=False))]
