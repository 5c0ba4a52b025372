"""OpenAI's ChatKit client (`<openai-chatkit>`, `@openai/chatkit-react`) against our backend: `POST /api/chatkit`."""
