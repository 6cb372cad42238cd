"""Deciding a pair: falsification, the SMT encoding, the solver (the one module that imports
z3), the search over sub-boxes, counterexample re-evaluation, and the prover pipeline."""
