"""Benchmark harnesses for mux, each runnable as ``python -m bench.<name>``.

* ``bench.translate``: translator throughput, pure functions, no I/O.
* ``bench.latency``: what one mux process adds between a client and an upstream on loopback:
  time to first token, inter-chunk latency, requests per second, start-up and memory.
* ``bench.profile``: where a mux process spends its time under that load.

Each prints markdown tables (``--json`` for machines) and takes ``--quick`` for the
seconds-long smoke run the test suite makes. Speed targets are checked here, never in tests.
"""
