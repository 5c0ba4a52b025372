"""Benchmark harness for the chat backend (not part of the test run; see tests/bench/README.md)."""

import os

# Before any bench module imports LiteLLM or the Agents SDK (the ChatKit peer does not import `backend`, which sets
# the same): no price-map fetch from the network, no trace export.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
