"""equivcheck: formal equivalence checking of ReLU networks stored as ONNX.

The library API the CLI and the pytest plugin are built on::

    import equivcheck
    result = equivcheck.prove("a.onnx", "b.onnx", domain="0:1", mode="strict")
    result.verdict  # Verdict.PROVED / REFUTED / UNKNOWN
"""

from .domain import Box, Domain, box_domain, parse_domain
from .errors import EquivcheckError, InputError
from .network import Network
from .onnx_import import load_network
from .prover import prove
from .result import Counterexample, ProofResult, Verdict
from .spec import Mode, Norm, Spec

__version__ = "0.1.0"

__all__ = [
    "Box", "Counterexample", "Domain", "EquivcheckError", "InputError", "Mode", "Network", "Norm",
    "ProofResult", "Spec", "Verdict", "box_domain", "load_network", "parse_domain", "prove",
    "__version__",
]
