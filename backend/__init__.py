"""A standalone chat backend for ChatKit-style frontends."""

import os

# LiteLLM fetches its model price map from GitHub at import time unless told not to, and the Agents SDK exports
# traces to OpenAI when a key is present. Neither may happen from a production backend without being asked for.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
