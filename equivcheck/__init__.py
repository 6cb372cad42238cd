"""equivcheck: formal equivalence checking of ReLU networks stored as ONNX.

The library API the CLI and the pytest plugin are built on::

    import equivcheck
    result = equivcheck.prove("a.onnx", "b.onnx", domain="0:1", mode="strict")
    result.verdict  # Verdict.PROVED / REFUTED / UNKNOWN

Names are imported on first use, so ``import equivcheck`` (and the pytest plugin, which every
pytest run loads) costs nothing until a check runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "Box": "core.domain", "Domain": "core.domain", "box_domain": "core.domain",
    "parse_domain": "io.domains",
    "EquivcheckError": "errors", "InputError": "errors",
    "Network": "core.network",
    "load_network": "io.onnx_import", "TorchModel": "io.torch_export",
    "prove": "solve.prover", "prove_networks": "solve.prover", "KnownBounds": "solve.prover",
    "ProverOptions": "core.options", "BoundMethod": "core.options",
    "Counterexample": "core.result", "ProofResult": "core.result", "Verdict": "core.result",
    "Mode": "core.spec", "Norm": "core.spec", "Spec": "core.spec",
}

__all__ = [
    "BoundMethod", "KnownBounds", "ProverOptions", "prove_networks",
    "Box", "Counterexample", "Domain", "EquivcheckError", "InputError", "Mode", "Network", "Norm",
    "ProofResult", "Spec", "TorchModel", "Verdict", "__version__", "box_domain", "load_network",
    "parse_domain", "prove",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'equivcheck' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public API only (``dir(equivcheck)`` lists no import helpers)."""
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs
    from equivcheck.core.domain import Box, Domain, box_domain
    from equivcheck.core.network import Network
    from equivcheck.core.options import BoundMethod, ProverOptions
    from equivcheck.core.result import Counterexample, ProofResult, Verdict
    from equivcheck.core.spec import Mode, Norm, Spec
    from equivcheck.errors import EquivcheckError, InputError
    from equivcheck.io.domains import parse_domain
    from equivcheck.io.onnx_import import load_network
    from equivcheck.io.torch_export import TorchModel
    from equivcheck.solve.prover import KnownBounds, prove, prove_networks
