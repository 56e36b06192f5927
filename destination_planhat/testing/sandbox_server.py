"""The sandbox's HTTP side, apart from what Planhat answers: the server and its life cycle
(`SandboxServer`: start, stop, wait_idle) and the handler's I/O (`HandlerIO`: bodies, answers,
resets, a client that hangs up). `sandbox` routes the requests and answers them as Planhat would.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeVar

import orjson

_DRAIN_CHUNK_BYTES = 1024 * 1024
_CLIENT_POLL_S = 0.05  # how often a delayed answer checks whether its client is still there


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the client has hung up (e.g. after its own timeout), without consuming any bytes."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (BlockingIOError, ValueError):  # ValueError: a TLS socket cannot peek
        return False
    except OSError:
        return True


class SandboxHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that can cut its open keep-alive connections, and knows when it is stopping."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], stopping: threading.Event
    ) -> None:
        self.stopping = stopping
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def track(self, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(sock)

    def untrack(self, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(sock)

    def close_connections(self) -> None:
        """Wake handler threads parked on idle keep-alive connections, so stop() leaves none behind."""
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients going away is part of the job (timeouts, fault tests); only report real bugs."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)) or self.stopping.is_set():
            return
        super().handle_error(request, client_address)


class HandlerIO(BaseHTTPRequestHandler):
    """The handler's HTTP plumbing: connections, bodies, answers and resets; no Planhat behaviour."""

    protocol_version = "HTTP/1.1"  # keep-alive, like the real host behind its load balancer
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    timeout = 300  # drop a keep-alive connection idle this long
    server: SandboxHTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence the stdlib's one stderr line per request: it would swamp test and benchmark output."""

    def _wait_unless_client_leaves(self, seconds: float) -> bool:
        """Sleep `seconds`, or less if the client hangs up (its read timeout); True when it did."""
        deadline = time.monotonic() + seconds
        while True:
            if _peer_closed(self.connection):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.server.stopping.is_set():
                return _peer_closed(self.connection)
            self.server.stopping.wait(min(remaining, _CLIENT_POLL_S))

    def _content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        try:
            length = int(value) if value is not None else None
        except ValueError:
            length = None
        return length if length is not None and length >= 0 else None

    def _drain(self, length: int) -> None:
        """Read and discard a body, keeping the keep-alive connection usable."""
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, _DRAIN_CHUNK_BYTES))
            if not chunk:
                self.close_connection = True
                return
            remaining -= len(chunk)

    def _abort(self) -> None:
        """Close with a TCP RST and no answer: SO_LINGER 0 turns close() into an abortive close."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # detach() + os.close() closes the descriptor now; a plain close() would wait for the
            # handler's file objects, and socketserver's shutdown(SHUT_WR) would send a FIN first.
            os.close(sock.detach())
        except OSError:
            pass

    def _send_json(self, status: int, payload: Any) -> None:
        self._send(status, orjson.dumps(payload), "application/json")

    def _send(self, status: int, body: bytes, content_type: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client is gone (timed out, reset): nobody to answer
            self.close_connection = True


_S = TypeVar("_S", bound="SandboxServer")


class SandboxServer:
    """The sandbox's life cycle: bind to loopback, serve on a background thread, stop; and the data
    requests in flight, so that a test can wait until none is (`wait_idle`)."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self._stopping = threading.Event()
        self._server: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._in_flight = 0
        self._idle = threading.Condition(threading.Lock())

    def _bind(self, address: tuple[str, int]) -> SandboxHTTPServer:
        """A server bound to `address` with the sandbox's request handler (the sandbox says which)."""
        raise NotImplementedError

    def _serving_starts(self) -> None:
        """Called by start() before it binds: open what the requests will write to."""

    def _serving_stopped(self) -> None:
        """Called by stop(), and by a start() that could not bind: close what _serving_starts opened."""

    def start(self: _S) -> _S:
        """Bind (port 0 picks a free port) and serve on a background thread; returns self for chaining."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._serving_starts()
        try:
            server = self._bind((self.host, self.port))
            if self.ssl_context is not None:
                server.socket = self.ssl_context.wrap_socket(server.socket, server_side=True)
        except OSError:
            self._serving_stopped()
            raise
        self.port = server.server_address[1]
        self._server = server
        # A short poll interval makes stop() (which waits for the loop to notice) take ~10 ms.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"planhat-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections, wake sleeping faults and join the server thread. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._serving_stopped()

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to configure the connector with, e.g. ``http://127.0.0.1:41234``."""
        if self._server is None:
            raise RuntimeError("the sandbox is not running; call start() first")
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until no data request is being handled (a client that timed out leaves its request
        running here for a moment); True when idle. Call before reading `requests` after a sync."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def _request_started(self) -> None:
        with self._idle:
            self._in_flight += 1

    def _request_finished(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def _sleep(self, seconds: float) -> None:
        """Sleep on the request's own thread; stop() cuts it short."""
        if seconds > 0:
            self._stopping.wait(seconds)
