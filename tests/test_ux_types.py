"""What a user sees of the library's types: Verdict as a string enum, ProofResult.proved, the
notebook display, the public names, and plain flags in the command-line help."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

import equivcheck
from equivcheck.cli import app
from equivcheck.core.result import Verdict

from .test_cli import pair  # noqa: F401  (the fixture)


def test_verdict_is_a_string_enum_ordered_for_min():
    assert [str(v) for v in Verdict] == ["refuted", "unknown", "proved"]
    assert Verdict.PROVED == "proved" and Verdict("unknown") is Verdict.UNKNOWN
    assert f"{Verdict.REFUTED:>8}" == " refuted" and Verdict.PROVED.label == "proved"
    assert json.dumps({"v": Verdict.UNKNOWN}) == '{"v": "unknown"}'
    assert min(Verdict.PROVED, Verdict.UNKNOWN) is Verdict.UNKNOWN
    assert min(Verdict.UNKNOWN, Verdict.REFUTED, Verdict.PROVED) is Verdict.REFUTED
    assert max(Verdict) is Verdict.PROVED and sorted(Verdict, reverse=True)[0] is Verdict.PROVED
    assert Verdict.REFUTED < Verdict.UNKNOWN < Verdict.PROVED  # not the alphabetical order
    assert Verdict.PROVED >= Verdict.PROVED and not Verdict.UNKNOWN > Verdict.PROVED
    with pytest.raises(TypeError):
        Verdict.PROVED < "refuted"  # noqa: B015  (ordering against text is refused)
    with pytest.raises(TypeError, match="no truth value"):
        bool(Verdict.UNKNOWN)
    assert {Verdict.PROVED: 1}["proved"] == 1  # hashes as its label


def test_proof_result_proved_and_its_html(pair):  # noqa: F811
    a, same, other = pair
    proved = equivcheck.prove(a, same, domain="-1:1")
    refuted = equivcheck.prove(a, other, domain="-1:1")
    assert proved.proved is True and refuted.proved is False
    html = proved._repr_html_()
    assert html.startswith("<table>") and "PROVED" in html and "strict" in html
    html = refuted._repr_html_()
    assert "REFUTED" in html and "counterexample" in html and "x = [" in html


def test_result_html_escapes_what_it_shows(pair, tmp_path):  # noqa: F811
    a, same, _ = pair
    odd = tmp_path / "<b>&.onnx"
    odd.write_bytes(same.read_bytes())
    html = equivcheck.prove(a, odd, domain="-1:1")._repr_html_()
    assert "&lt;b&gt;&amp;.onnx" in html and "<b>&" not in html


def test_only_the_public_api_is_listed():
    names = dir(equivcheck)
    assert names == sorted(equivcheck.__all__)
    for private in ("annotations", "importlib", "TYPE_CHECKING", "_EXPORTS"):
        assert private not in names
    for name in equivcheck.__all__:
        assert getattr(equivcheck, name) is not None


@pytest.mark.parametrize("command", [[], ["prove"], ["compress"], ["audit"], ["regions", "count"],
                                     ["regions", "bound"]])
def test_help_shows_flags_as_plain_flags(command):
    r = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "160"})
    assert r.exit_code == 0, r.output
    assert "<bool>" not in r.stdout
    if command:
        assert re.search(r"--json\s+Print one JSON object", r.stdout), r.stdout
    assert re.search(r"--help\s+-h\s+Show this message", r.stdout), r.stdout
    if command in (["prove"], ["regions", "count"]):  # rich markup must not eat the brackets
        assert "[tool.equivcheck]" in r.stdout, r.stdout
