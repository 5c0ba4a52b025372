"""File attachments: upload, storage, limits, lifecycle and the model-input seams for the chat."""
