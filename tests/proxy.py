"""A TCP proxy in front of a real server that loses answers on demand, as a backend restarting mid-request
(or a load balancer dropping its connection) would: the call reaches the backend, the answer never arrives."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from tests.servers import free_port


class DroppingProxy:
    """`drop = n`: the next n POSTs are forwarded, and when the backend answers, the client's connection is
    reset instead (the backend did the work; the caller sees a dropped connection). `drop = -1`: every POST.
    `hang = True`: requests are swallowed, never answered (a backend stuck but still accepting connections).
    `pause()` resets every connection and stops listening (connections are refused); `resume()` listens again
    on the same port."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.drop = 0
        self.hang = False
        self.posts = 0  # POSTs that reached the backend
        self.dropped = 0  # answers lost
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def resume(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def pause(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await asyncio.gather(*self._handlers, return_exceptions=True)  # each ends on its reset connections
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        try:
            up_r, up_w = await asyncio.open_connection(self._host, self._port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers.update((client_w, up_w))
        losing = asyncio.Event()  # the request in flight on this connection is to lose its answer

        async def upstream() -> None:
            while chunk := await client_r.read(65536):
                if self.hang:
                    continue
                if chunk.startswith(b"POST "):
                    self.posts += 1
                    if self.drop:
                        losing.set()
                        if self.drop > 0:  # -1 stays: every POST
                            self.drop -= 1
                up_w.write(chunk)
                await up_w.drain()

        async def downstream() -> None:
            while chunk := await up_r.read(65536):
                if losing.is_set():
                    self.dropped += 1
                    return  # the answer is lost: both connections are reset below
                client_w.write(chunk)
                await client_w.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        with contextlib.suppress(OSError):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in (client_w, up_w):
            writer.transport.abort()
            self._writers.discard(writer)


@contextlib.asynccontextmanager
async def dropping_proxy(upstream: str) -> AsyncIterator[DroppingProxy]:
    proxy = DroppingProxy(upstream)
    await proxy.resume()
    try:
        yield proxy
    finally:
        await proxy.pause()
