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
    "Box": "domain", "Domain": "domain", "box_domain": "domain", "parse_domain": "domain",
    "EquivcheckError": "errors", "InputError": "errors",
    "Network": "network",
    "load_network": "onnx_import",
    "prove": "prover",
    "Counterexample": "result", "ProofResult": "result", "Verdict": "result",
    "Mode": "spec", "Norm": "spec", "Spec": "spec",
}

__all__ = [
    "Box", "Counterexample", "Domain", "EquivcheckError", "InputError", "Mode", "Network", "Norm",
    "ProofResult", "Spec", "Verdict", "__version__", "box_domain", "load_network", "parse_domain",
    "prove",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'equivcheck' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and IDEs
    from .domain import Box, Domain, box_domain, parse_domain
    from .errors import EquivcheckError, InputError
    from .network import Network
    from .onnx_import import load_network
    from .prover import prove
    from .result import Counterexample, ProofResult, Verdict
    from .spec import Mode, Norm, Spec
