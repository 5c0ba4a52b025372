"""A TCP proxy on 127.0.0.1 that a test can cut and restore, or freeze and thaw: database outages, for real."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self


class TcpProxy:
    """Forwards `127.0.0.1:<port>` to `target`; `cut()` drops every connection and refuses new ones till `restore()`.

    `freeze()` is the other outage: every connection stays open and new ones are accepted, but no byte passes in
    either direction until `thaw()`. That is what a stopped server process (SIGSTOP) or a network that drops packets
    without a reset looks like to a client whose kernel still gets acknowledgements: nothing fails, nothing answers.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.up = True
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.thaw()
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        """The database is gone: every open connection drops and new ones are refused."""
        self.up = False
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        """The database is back."""
        self.up = True

    def freeze(self) -> None:
        """Pass no more bytes (connections stay open) until `thaw()`."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Pass bytes again, those held during the freeze first."""
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        await self._flowing.wait()  # a frozen server accepts (its kernel does) but never answers
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()
