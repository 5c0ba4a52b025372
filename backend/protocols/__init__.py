"""Protocol adapters: each turns its protocol's requests into engine commands and our events into its frames.

An adapter parses, calls `ChatService`, and encodes; it never reaches the store, the Agents SDK, LiteLLM or the
database (`tests/protocols/test_protocol_boundaries.py` enforces it). The native `/chatkit` body is the first adapter
(`backend.chat.schemas.ChatRequest.to_command`); `aisdk` speaks the Vercel AI SDK's UI message stream.
"""
