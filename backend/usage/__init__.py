"""Usage: the ledger of model calls, per-user quotas and rate limits, and their reports (API and CLI)."""
