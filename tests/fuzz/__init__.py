"""Fuzzing harness for equivcheck (issue 8): hypothesis strategies over ONNX graphs, VNN-LIB text,
JSON domains and CLI arguments, and the properties every run must satisfy.

* :mod:`.nets`      small ReLU networks as exact recipes, the pair relations and their ONNX renderings
                    (valid ones and deliberately broken ones);
* :mod:`.domains`   input domains with exact (possibly strict) bounds, rendered as ``LO:HI``, JSON or
                    VNN-LIB, valid or mangled;
* :mod:`.oracle`    exact ground truth: domain membership, the spec's relation in rationals, and the
                    cross-checks of PROVED / REFUTED verdicts;
* :mod:`.cli`       running the command line (in process or as a subprocess) in a scratch folder, and
                    the properties of every run (exit code, one stderr line, no traceback, strict
                    JSON, no stray or overwritten files, the time limit);
* :mod:`.targets`   the four fuzz targets: hypothesis strategies and the check of one drawn case.

``tests/test_fuzz.py`` runs the targets for a bounded number of examples in CI;
``benchmarks/fuzz_long.py`` runs them for minutes with random seeds.
"""
