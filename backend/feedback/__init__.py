"""Feedback on replies, for the operator: `python -m backend.feedback` lists recent ratings (negative by default).

Users rate replies through `PUT /api/conversations/{id}/messages/{message_id}/feedback`
(`backend.conversations.store.ConversationRows.set_feedback`); the table is `backend.models.MessageFeedback`.
"""
