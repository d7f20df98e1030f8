"""A loopback TCP proxy that misbehaves on command, for the Twilio side of a call.

    async with FaultProxy(target_port) as proxy:
        ... connect to proxy.port instead of the bridge ...
        proxy.delay_s = 0.05     # every chunk, both ways, 50 ms late (order kept)
        proxy.stall()            # stop forwarding both ways; sockets stay open (half-open)
        proxy.resume()           # forward again, everything held back first
        await proxy.drop()       # close every connection (FIN), no WebSocket close frame
        await proxy.reset()      # abort every connection with a TCP RST
        proxy.truncate_next()    # forward half of the next chunk upstream (client → server),
                                 # then drop

Faults act on the connections open at the time (a webhook POST made earlier is over), so
a test starts the call, waits for the media stream, then throws the fault at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import TracebackType


class _Link:
    """One proxied connection: two pumps, caller → bridge and bridge → caller."""

    def __init__(
        self,
        proxy: FaultProxy,
        caller: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        bridge: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.writers = (caller[1], bridge[1])
        self.tasks = [
            asyncio.create_task(self._pump(caller[0], bridge[1], upstream=True)),
            asyncio.create_task(self._pump(bridge[0], caller[1], upstream=False)),
        ]

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        """Read on, and write each chunk ``delay_s`` after it came (latency, not a cap on
        throughput), unless stalled."""
        proxy = self.proxy
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            try:
                while data := await reader.read(65536):
                    await chunks.put((loop.time() + proxy.delay_s, data))
            finally:
                chunks.put_nowait((0.0, b""))  # the end, however it came

        reading = asyncio.create_task(read())
        try:
            while True:
                due, data = await chunks.get()
                if not data:
                    return
                await proxy.flowing.wait()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if upstream and proxy.truncating:
                    proxy.truncating = False
                    writer.write(data[: max(1, len(data) // 2)])
                    await writer.drain()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            self.close(abort=False)

    def close(self, *, abort: bool) -> None:
        for writer in self.writers:
            if abort:
                sock = writer.get_extra_info("socket")
                if sock is not None:  # SO_LINGER 0: close sends a RST
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                writer.transport.abort()
            else:
                writer.close()

    async def wait(self) -> None:
        await asyncio.gather(*self.tasks, return_exceptions=True)


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.delay_s = 0.0
        self.truncating = False
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.links: list[_Link] = []
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.resume()
        for link in self.links:
            link.close(abort=True)
        await asyncio.gather(*(link.wait() for link in self.links))
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            bridge = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.links.append(_Link(self, (reader, writer), bridge))

    def stall(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    async def drop(self) -> None:
        for link in self.links:
            link.close(abort=False)
        await asyncio.gather(*(link.wait() for link in self.links))

    async def reset(self) -> None:
        for link in self.links:
            link.close(abort=True)
        await asyncio.gather(*(link.wait() for link in self.links))

    def truncate_next(self) -> None:
        self.truncating = True
