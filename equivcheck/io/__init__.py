"""Reading and writing what users hand us: ONNX models (import and export) and input domains
(``LO:HI``, JSON, VNN-LIB). Builds on :mod:`equivcheck.core`."""
