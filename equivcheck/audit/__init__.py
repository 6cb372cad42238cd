"""The audit of a pruned or compressed model: verdicts, certified and witnessed deviation,
what changed per unit (:func:`audit`), and its HTML/Markdown/JSON report."""

from equivcheck.audit.auditor import audit
from equivcheck.audit.results import AuditResult

__all__ = ["AuditResult", "audit"]
