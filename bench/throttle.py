"""A bandwidth-limiting TCP proxy on 127.0.0.1, for overload benchmarks.

It stands between a citybrain tier and a real server (Mosquitto, influxd) and lets bytes
through at most ``rate_bytes_per_s`` per direction (token bucket), like a slow WAN link or
an overloaded database. It is a network condition, not a fake server: every byte still goes
to and comes from the real one. ``set_rate(None)`` lifts the limit at run time.
"""

from __future__ import annotations

import asyncio
import threading
import time


class _Bucket:
    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.tokens = 0.0
        self.last = time.monotonic()

    async def take(self, n: int) -> None:
        """Wait until ``n`` bytes may pass (rate None: at once)."""
        while self.rate is not None:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= n or self.tokens >= self.rate:
                self.tokens -= n
                return
            await asyncio.sleep(min(0.05, (n - self.tokens) / self.rate))


class ThrottledProxy:
    """``listen_port`` → ``target_host:target_port`` in a background thread."""

    def __init__(self, listen_port: int, target_host: str, target_port: int,
                 rate_bytes_per_s: float | None) -> None:
        self.listen_port = listen_port
        self.target = (target_host, target_port)
        self._buckets = [_Bucket(rate_bytes_per_s), _Bucket(rate_bytes_per_s)]
        self.bytes = [0, 0]  # client → server, server → client
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="throttle")

    def set_rate(self, rate_bytes_per_s: float | None) -> None:
        for b in self._buckets:
            b.rate = rate_bytes_per_s

    def start(self) -> ThrottledProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("throttle proxy did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.listen_port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer, 0), self._pipe(up_reader, writer, 1),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    direction: int) -> None:
        try:
            while data := await reader.read(16384):
                await self._buckets[direction].take(len(data))
                writer.write(data)
                self.bytes[direction] += len(data)
                await writer.drain()
        finally:
            writer.close()
