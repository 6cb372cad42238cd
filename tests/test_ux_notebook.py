"""Results in notebooks: ``_repr_html_`` of the audit and the compress results shows what the CLI
prints (bounds, verdicts, the per-layer table, the proof), escapes everything it quotes, is
well-formed, and needs no matplotlib."""

from __future__ import annotations

import dataclasses
import sys
from fractions import Fraction
from html.parser import HTMLParser

import pytest

from equivcheck.audit import audit
from equivcheck.audit.results import ChangeKind, UnitChange
from equivcheck.compress import compress
from equivcheck.core.options import UnitStability

from .helpers import MODELS

TINY = MODELS / "tiny_original.onnx"
PERTURBED = MODELS / "tiny_perturbed.onnx"
VOID = {"br", "hr", "img", "meta", "input", "col"}


class _Balance(HTMLParser):
    """Records tags closed out of order or left open, and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> str:
    """The text of ``html`` (entities decoded), after asserting every tag is closed in order."""
    p = _Balance()
    p.feed(html)
    p.close()
    assert not p.errors, p.errors
    assert not p.stack, f"left open: {p.stack}"
    return "".join(p.text)


@pytest.fixture(scope="module")
def audited():
    return audit(TINY, PERTURBED, "0:1", timeout=30, samples=200)


@pytest.fixture(scope="module")
def compressed():
    return compress(TINY, domain="0:1", timeout=60)


def test_audit_html_shows_the_bounds_and_every_verdict(audited, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # any matplotlib import now fails
    html = audited._repr_html_()
    text = _parse(html)
    d = audited.deviation
    assert f"{float(d.lower):.6g} <= max" in text and f"<= {float(d.upper):.6g}" in text
    assert d.upper_method in text
    for c in audited.checks:
        assert c.name in text and c.reason in text
    strict = audited.check("strict")
    assert strict.verdict.value == "refuted"  # the perturbed copy differs
    assert "#cf222e'><b>REFUTED</b>" in html  # drawn in the refuted colour
    assert str(TINY) in text and str(PERTURBED) in text and audited.domain_text in text
    assert "WARNING" not in text and "live units removed" not in text


def test_audit_html_escapes_what_it_quotes(audited):
    r = dataclasses.replace(audited, original="<b>a</b>.onnx",
                            notes=("<script>alert(1)</script>",))
    html = r._repr_html_()
    assert "<script>" not in html and "<b>a</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)</script>" in _parse(html)


def test_audit_html_flags_live_units_and_inconsistent_bounds(audited):
    live = UnitChange(layer=1, unit=7, kind=ChangeKind.REMOVED, original=UnitStability.UNSTABLE,
                      harmless=False)
    harmless = UnitChange(layer=0, unit=2, kind=ChangeKind.REMOVED,
                          original=UnitStability.INACTIVE, harmless=True)
    bad = dataclasses.replace(audited.deviation, lower=Fraction(2), upper=Fraction(1))
    text = _parse(dataclasses.replace(audited, units=(live, harmless), deviation=bad)._repr_html_())
    assert "1 of 2 removed units were live (removing them can change the outputs): layer 1 " \
           "unit 7" in text
    assert "layer 0 unit 2" not in text
    assert "WARNING" in text and "bug in equivcheck" in text


def test_compress_html_shows_the_table_the_summary_and_the_proof(compressed):
    text = _parse(compressed._repr_html_())
    c = compressed
    assert f"{c.original.description} -> {c.compressed.description}" in text
    assert f"{c.hidden_before - c.hidden_after} of {c.hidden_before} hidden units removed" in text
    for r in c.table:
        assert f"{r.params_before:,}" in text and f"{r.params_after:,}" in text
    assert c.proof is not None and c.proof.proved
    assert "PROVED" in text and c.proof.reason in text
    assert "proof of strict equality" in text if c.epsilon is None else "within epsilon" in text


def test_compress_html_without_a_proof_says_not_verified(compressed):
    text = _parse(dataclasses.replace(compressed, proof=None)._repr_html_())
    assert "not verified" in text and "PROVED" not in text
