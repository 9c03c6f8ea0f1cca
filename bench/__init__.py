"""HealthCode Ledger benchmarks (``./scripts/bench``): one sub-command per benchmark, results in
``bench/results/<name>.json``. Add a benchmark by adding a command to :mod:`bench.run` and a name to
its ``SUITE``."""
