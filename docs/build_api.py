"""Build the API reference of equivcheck from its docstrings, as static HTML (pdoc).

    python docs/build_api.py [OUTPUT_FOLDER]     # default: build/api

Every public module of the package gets a page (``index.html`` lists them); docstrings are read
as reStructuredText, which is how they are written. Needs pdoc (in the ``dev`` extra) and no
network: the pages are self-contained. ``tests/test_ux_docs.py`` builds it in CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(output: Path) -> list[Path]:
    """Write the reference into ``output``; returns the HTML pages written."""
    import pdoc
    import pdoc.render

    pdoc.render.configure(docformat="restructuredtext", search=False, show_source=False)
    output.mkdir(parents=True, exist_ok=True)
    pdoc.pdoc(*modules(), output_directory=output)
    return sorted(output.rglob("*.html"))


def modules() -> list[str]:
    """The package and every module under it (pdoc lists only the submodules a package's
    ``__all__`` names, and equivcheck's ``__all__`` names the API, not its modules)."""
    import pkgutil

    import equivcheck

    found = pkgutil.walk_packages(equivcheck.__path__, "equivcheck.")
    return ["equivcheck", *sorted(m.name for m in found if "._" not in m.name)]


def main(argv: list[str]) -> int:
    output = Path(argv[1]) if len(argv) > 1 else ROOT / "build" / "api"
    pages = build(output)
    print(f"{len(pages)} pages written to {output} (open {output / 'index.html'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
