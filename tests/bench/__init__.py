"""Benchmark harness for the chat backend (not part of the test run; see tests/bench/README.md)."""
