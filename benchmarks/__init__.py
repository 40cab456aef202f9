"""The benchmark suite of alkernels (pytest-benchmark); see ``benchmarks/README.md``.

A package so that its test modules (``benchmarks.test_acquisition``, ...) never clash with the
unit tests of the same file names under ``tests/`` when both are collected in one session.
"""
