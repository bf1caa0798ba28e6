"""Load testing and benchmarks for pavis: wrk/nginx/locust drivers and the ``bench`` harness.

Owns: everything under ``loadtest/`` — measuring, never judging (CI runs the quick mode only
to show the harness works). Not installed with the package; run from the repository root
(``python -m loadtest.bench``).
"""
