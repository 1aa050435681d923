"""The on-device benchmarking harness: the coordinator (cli, config, variants, sweep, store, report)."""

__version__ = "0.1.0"
