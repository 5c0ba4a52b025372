"""AG-UI 1.0 (CopilotKit, assistant-ui's react-ag-ui): see backend/protocols/AGUI.md."""
