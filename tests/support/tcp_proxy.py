"""A TCP proxy that can go down and come back: a database outage on demand.

``stop`` closes the listening socket and cuts every open connection, as a
restarting database or a network partition would; ``start`` listens on the
same port again. What passes through is never looked at.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    @classmethod
    def to_url(cls, url: str) -> TcpProxy:
        parts = urlsplit(url)
        assert parts.hostname and parts.port
        return cls(parts.hostname, parts.port)

    def url(self, target_url: str) -> str:
        """``target_url`` with the proxy's port: the same server, through the proxy."""
        parts = urlsplit(target_url)
        netloc = parts.netloc.rsplit(":", 1)[0] + f":{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.connect, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        await self.server.wait_closed()
        self.server = None

    async def connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, upstream_writer}
        try:
            await asyncio.gather(
                pipe(reader, upstream_writer), pipe(upstream_reader, writer), return_exceptions=True
            )
        finally:
            for end in (writer, upstream_writer):
                self.writers.discard(end)
                end.transport.abort()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
