"""The response every streaming adapter sends: our events of a subscription, encoded by the adapter's encoder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import anyio
from sse_starlette import EventSourceResponse

from backend.chat.events import Event
from backend.chat.routes import sse_response
from backend.chat.service import ChatService, Subscription


class FrameEncoder(Protocol):
    """One response's encoder: the frames of each event, then the frames the response ends with."""

    def encode(self, event_id: int, event: Event) -> bytes:
        """The frames of one event (possibly none)."""
        ...

    def close(self) -> bytes:
        """The response's last frames (its protocol's terminal event)."""
        ...


def event_stream(
    chat_service: ChatService,
    subscription: Subscription,
    encoder: FrameEncoder,
    headers: Mapping[str, str] | None = None,
) -> EventSourceResponse:
    """The SSE response: the subscription's events through `encoder`, ending with `encoder.close()`."""

    async def frames(shutdown: anyio.Event) -> AsyncIterator[bytes]:
        async for event_id, event in chat_service.events(subscription, shutdown):
            data = encoder.encode(event_id, event)
            if data:
                yield data
        if tail := encoder.close():  # ChatKit's is empty
            yield tail

    return sse_response(chat_service, frames, headers)
