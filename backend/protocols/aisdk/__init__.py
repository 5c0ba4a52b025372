"""The Vercel AI SDK's UI message stream (`useChat`, assistant-ui): `POST /api/chat` and its resume; see AISDK.md."""
