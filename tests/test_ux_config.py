"""``[tool.equivcheck]`` in the user's pyproject.toml: found from the current folder up, checked
strictly, read by the command line and the pytest plugin, and weaker than explicit options."""

from __future__ import annotations

import json

import pytest

from equivcheck.core.options import ProjectDefaults, find_pyproject, project_defaults
from equivcheck.errors import InputError
from equivcheck.io.onnx_export import export_network

from .helpers import cli
from .test_cli import pair  # noqa: F401  (the fixture)
from .test_testing import base, shifted

pytest_plugins = ["pytester"]


def write_project(folder, table: str) -> None:
    (folder / "pyproject.toml").write_text(f'[project]\nname = "user"\n\n{table}\n')


def test_found_from_a_subfolder_up(tmp_path):
    write_project(tmp_path, '[tool.equivcheck]\ntimeout = 12\nmode = "epsilon"\n'
                            'tolerance = 1e-4\nunknown = "skip"')
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_pyproject(deep) == tmp_path / "pyproject.toml"
    got = project_defaults(deep)
    assert got == ProjectDefaults(source=str(tmp_path / "pyproject.toml"), timeout=12.0,
                                  mode="epsilon", tolerance="0.0001", unknown="skip")


def test_no_table_and_no_file_give_empty_defaults(tmp_path):
    assert project_defaults(tmp_path).timeout is None  # no pyproject.toml above /tmp/...
    write_project(tmp_path, '[tool.other]\nx = 1')
    assert project_defaults(tmp_path) == ProjectDefaults(source=str(tmp_path / "pyproject.toml"))


@pytest.mark.parametrize("table, needle", [
    ('timeout = -3', "timeout must be positive"),
    ('timeout = "soon"', "timeout must be a number"),
    ('mode = "fuzzy"', "mode = 'fuzzy': use one of strict, epsilon, argmax"),
    ('tolerance = "abc"', "not a decimal number"),
    ('tolerance = -1', "negative"),
    ('bounds = "magic"', "use one of interval"),
    ('unknown = "ignore"', "use one of fail, skip, xfail"),
    ('timout = 3', "unknown key(s) timout"),
])
def test_a_typo_is_an_error_naming_the_file_and_key(tmp_path, table, needle):
    write_project(tmp_path, f"[tool.equivcheck]\n{table}")
    with pytest.raises(InputError, match="pyproject.toml") as info:
        project_defaults(tmp_path)
    assert needle in str(info.value)


def test_broken_toml_is_an_error(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.equivcheck\n")
    with pytest.raises(InputError, match="cannot read it as TOML"):
        project_defaults(tmp_path)


def test_cli_takes_the_project_defaults_and_options_win(pair, tmp_path, monkeypatch):  # noqa: F811
    a, _, other = pair
    write_project(tmp_path, '[tool.equivcheck]\nmode = "epsilon"\ntolerance = "0.25"\n'
                            'timeout = 17\nbounds = "symbolic"')
    monkeypatch.chdir(tmp_path)
    data = json.loads(cli("prove", a, other, "--domain", "-1:1", "--json").stdout)
    assert data["spec"]["mode"] == "epsilon" and data["spec"]["tolerance"] == 0.25
    assert data["options"]["timeout"] == 17 and data["options"]["bound_method"] == "symbolic"
    r = cli("prove", a, other, "--domain", "-1:1", "--json", "--mode", "strict", "--timeout", "9",
            "--bounds", "interval")
    data = json.loads(r.stdout)  # the tolerance is for epsilon mode only: no usage error
    assert data["spec"] == {"mode": "strict"} and data["options"]["timeout"] == 9
    assert data["options"]["bound_method"] == "interval"
    r = cli("prove", a, other, "--domain", "-1:1", "--json", "--tolerance", "0.5")
    assert json.loads(r.stdout)["spec"]["tolerance"] == 0.5


def test_cli_refuses_a_bad_table_in_one_line(pair, tmp_path, monkeypatch):  # noqa: F811
    a, same, _ = pair
    write_project(tmp_path, '[tool.equivcheck]\nmode = "fuzzy"')
    monkeypatch.chdir(tmp_path)
    r = cli("prove", a, same)
    assert r.exit_code == 4 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pyproject.toml" in lines[0] and "fuzzy" in lines[0]


def test_the_plugin_reads_the_project_defaults(pytester):
    export_network(base(), pytester.path / "base.onnx")
    export_network(shifted(), pytester.path / "shifted.onnx")
    write_project(pytester.path, '[tool.equivcheck]\ntimeout = 11\nmode = "epsilon"\n'
                                 'tolerance = "0.1"')
    pytester.makepyfile("""
        import pytest
        from equivcheck.testing import assert_equivalent

        def test_defaults():
            assert_equivalent("base.onnx", "shifted.onnx", domain="-1:1")

        @pytest.mark.equivcheck(mode="strict")
        def test_marker_wins():
            assert_equivalent("base.onnx", "shifted.onnx", domain="-1:1")
    """)
    res = pytester.runpytest("-p", "no:cacheprovider")
    res.assert_outcomes(failed=2)
    out = res.stdout.str()
    assert "--mode epsilon --tolerance 0.1 --timeout 11" in out
    assert "--mode strict --timeout 11" in out
    res = pytester.runpytest("-p", "no:cacheprovider", "--equivcheck-timeout=5")
    assert "--mode epsilon --tolerance 0.1 --timeout 5" in res.stdout.str()  # option wins
