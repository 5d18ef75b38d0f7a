"""A Kafka-protocol TCP proxy in front of the embedded broker that can hold one client's
produce requests.

The broker advertises the proxy's address, so every connection goes through it. Requests are
framed (int32 size) and their header read (api key, client id); a Produce request from a held
client id waits until released, and so does everything after it on that connection (Kafka
answers a connection's requests in order). That is a stalled sink for one stage, while the
others and every consumer carry on.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from streamflow.broker import EmbeddedBroker, free_port

PRODUCE = 0


class StallingProxy:
    def __init__(self, upstream_port: int, port: int) -> None:
        self.upstream_port, self.port = upstream_port, port
        self.held: set[str] = set()  # client ids whose produce requests wait
        self.loop = asyncio.new_event_loop()
        self._released: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> StallingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def hold(self, client_id: str) -> None:
        self.loop.call_soon_threadsafe(self._hold, client_id)

    def release(self) -> None:
        self.loop.call_soon_threadsafe(self._release)

    def stop(self) -> None:
        self.release()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def _hold(self, client_id: str) -> None:
        self.held.add(client_id)
        assert self._released is not None
        self._released.clear()

    def _release(self) -> None:
        self.held.clear()
        if self._released is not None:
            self._released.set()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._released = asyncio.Event()
        self._released.set()
        server = self.loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port)
        )
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()
            # Everything the proxy opened is closed with its loop: tests turn ResourceWarnings
            # (an unclosed loop or socket) into errors.
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(server.wait_closed())
            self.loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        back = asyncio.ensure_future(self._pipe(up_reader, writer))
        try:
            while True:
                head = await reader.readexactly(4)
                frame = await reader.readexactly(struct.unpack(">i", head)[0])
                api_key = struct.unpack(">h", frame[:2])[0]
                id_len = struct.unpack(">h", frame[8:10])[0]
                client_id = frame[10 : 10 + id_len].decode(errors="replace") if id_len > 0 else ""
                while api_key == PRODUCE and client_id in self.held:
                    assert self._released is not None
                    await self._released.wait()
                up_writer.write(head + frame)
                await up_writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            back.cancel()
            up_writer.close()
            writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass


@contextmanager
def broker_behind_proxy(log_path: str) -> Iterator[tuple[EmbeddedBroker, StallingProxy]]:
    """An embedded broker that every client reaches through a StallingProxy (its bootstrap)."""
    port = free_port()
    proxy = StallingProxy(upstream_port=0, port=port)
    broker = EmbeddedBroker(log_path=log_path, advertise=f"127.0.0.1:{port}")
    broker.port = free_port()
    proxy.upstream_port = broker.port
    proxy.start()
    try:
        with broker:
            yield broker, proxy
    finally:
        proxy.stop()
