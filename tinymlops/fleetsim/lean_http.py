"""A lean HTTP/1.1 keep-alive client over asyncio streams, for the simulated fleet.

It offers the slice of httpx.AsyncClient that the device side (tinymlops.fleet.client.AsyncDevice)
uses — get, post, stream; responses with status_code, headers, content, text and json() — and
raises httpx's transport errors, so code written against httpx runs on it unchanged. httpx spends
about half a millisecond of CPU per request in its pool and stream layers; a 10,000-device
rollout makes some 130,000 requests, so the simulator speaks HTTP/1.1 itself (as
tinymlops.fleetsim.loadgen does), still over real sockets to the real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
import sys
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import httpx

T = TypeVar("T")
CHUNK = 64 * 1024


class Headers(dict):
    """Response headers by lower-cased name (the last value wins)."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())


class Response:
    __slots__ = ("status_code", "headers", "content", "_conn", "_left")

    def __init__(self, status_code: int, headers: Headers, content: bytes = b"") -> None:
        self.status_code, self.headers, self.content = status_code, headers, content
        self._conn: _Connection | None = None  # set while a streamed body is still on the wire
        self._left = 0

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body of a streamed response, chunk by chunk (a body without Content-Length was read
        whole before the response was handed out)."""
        if self.content:
            yield self.content
        while self._left > 0 and self._conn is not None:
            chunk = await self._conn.reader.read(min(CHUNK, self._left))
            if not chunk:
                raise httpx.ReadError("connection closed mid-body")
            self._left -= len(chunk)
            yield chunk


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used = False  # has answered a request: a failure on it may just be a stale keep-alive

    @property
    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class LeanClient:
    """`async with LeanClient(base_url, connections=32) as http:` — at most `connections` requests
    in flight, each on a kept-alive connection of its own."""

    def __init__(self, base_url: str, *, connections: int = 32, timeout: float = 60.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"base_url: expected http://host:port, got {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout = timeout
        self._host_header = f"Host: {parts.netloc}\r\n"
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[_Connection] = []

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()

    # -- the httpx.AsyncClient slice ------------------------------------------------------------
    async def get(self, url: str, *, params: dict | None = None, headers: dict | None = None) -> Response:
        return await self.request("GET", url, params=params, headers=headers)

    async def post(
        self, url: str, *, json: Any = None, content: bytes | str | None = None, headers: dict | None = None
    ) -> Response:
        return await self.request("POST", url, json=json, content=content, headers=headers)

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: dict | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        headers: dict | None = None,
    ) -> Response:
        head, body = self._encode(method, url, params, json, content, headers)
        async with self._slots:
            return await _within(self._exchange(head, body), self.timeout)

    @contextlib.asynccontextmanager
    async def stream(self, method: str, url: str, *, headers: dict | None = None) -> AsyncIterator[Response]:
        """The response head now, the body through `aiter_bytes()`; a body left unread closes the
        connection instead of returning it to the pool."""
        head, body = self._encode(method, url, None, None, None, headers)
        async with self._slots:
            conn = await self._connection()
            try:
                conn.writer.write(head + body)
                response = await _within(self._read_head(conn), self.timeout)
                length = response.headers.get("content-length")
                if length is None:
                    await _within(self._read_body(conn, response), self.timeout)
                response._conn, response._left = conn, int(length or 0)
                yield response
            except BaseException:
                conn.close()
                raise
            if response._left == 0 and response.headers.get("connection") != "close":
                self._idle.append(conn)
            else:
                conn.close()

    # -- the wire --------------------------------------------------------------------------------
    def _encode(
        self, method: str, url: str, params: dict | None, json: Any, content: bytes | str | None, headers: dict | None
    ) -> tuple[bytes, bytes]:
        target = f"{url}?{urlencode(params)}" if params else url
        lines = [f"{method} {target} HTTP/1.1\r\n", self._host_header]
        lines += [f"{k}: {v}\r\n" for k, v in (headers or {}).items()]
        if json is not None:
            body = jsonlib.dumps(json, separators=(",", ":")).encode()
            if not headers or "Content-Type" not in headers:
                lines.append("Content-Type: application/json\r\n")
        else:
            body = content.encode() if isinstance(content, str) else content or b""
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode(), body

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable:
                return conn
            conn.close()
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=CHUNK * 4)
        except OSError as exc:
            raise httpx.ConnectError(f"{self.host}:{self.port}: {exc}") from None
        return _Connection(reader, writer)

    async def _exchange(self, head: bytes, body: bytes) -> Response:
        while True:
            conn, response = await self._connection(), None
            try:
                conn.writer.write(head + body)
                response = await self._read_head(conn)
                await self._read_body(conn, response)
            except (OSError, asyncio.IncompleteReadError) as exc:
                conn.close()
                # A kept-alive connection the server had closed before this request reached it
                # (nothing came back): sending it again on a fresh connection is safe, as in urllib3.
                if conn.used and response is None and not getattr(exc, "partial", b""):
                    continue
                raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from None
            except BaseException:
                conn.close()
                raise
            conn.used = True
            if response.headers.get("connection") == "close":
                conn.close()
            else:
                self._idle.append(conn)
            return response

    @staticmethod
    async def _read_body(conn: _Connection, response: Response) -> None:
        length = response.headers.get("content-length")
        if length is not None:
            response.content = await conn.reader.readexactly(int(length)) if length != "0" else b""
        elif response.headers.get("transfer-encoding", "").lower() == "chunked":
            response.content = await _read_chunked(conn.reader)
        elif response.status_code not in (204, 304):
            response.content = await conn.reader.read()  # delimited by the server closing
            response.headers["connection"] = "close"

    @staticmethod
    async def _read_head(conn: _Connection) -> Response:
        raw = await conn.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = raw[:-4].decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise httpx.RemoteProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        headers = Headers()
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return Response(int(parts[1]), headers)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
                pass
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)


async def _within(call: Awaitable[T], seconds: float) -> T:
    if sys.version_info >= (3, 11):  # a timer handle, not a task per request
        try:
            async with asyncio.timeout(seconds):
                return await call
        except TimeoutError:
            raise httpx.ReadTimeout(f"no answer within {seconds:.0f} s") from None
    try:
        return await asyncio.wait_for(call, seconds)
    except asyncio.TimeoutError:
        raise httpx.ReadTimeout(f"no answer within {seconds:.0f} s") from None
