"""A small TCP proxy on 127.0.0.1 in front of an IMAP server that misbehaves on cue.

Tests put it between a client and the lab's Dovecot to make failures happen at an
exact point of a real session:

- `drop_on`: when a client command line matches, the client gets `* BYE` and both
  connections close (a server that hangs up mid-session).
- `stall_on`: when a client command line matches, that command is never forwarded
  and nothing more is sent back (a server that stops answering); after `stall_for`
  seconds the proxy gives up and closes, so a client without a read timeout makes
  its test fail instead of hanging.
- `rewrite_up` / `rewrite_down`: regex substitutions on client command lines and on
  server response lines (e.g. to advertise a capability Dovecot does not have).

`commands` records every client command line (LOGIN arguments blanked), so a test
can count logins or see which searches were sent.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterable

Pattern = bytes | str | re.Pattern[bytes]
Rewrite = tuple[Pattern, bytes]


def _compile(pattern: Pattern | None) -> re.Pattern[bytes] | None:
    if pattern is None or isinstance(pattern, re.Pattern):
        return pattern
    if isinstance(pattern, str):
        pattern = pattern.encode()
    return re.compile(pattern, re.IGNORECASE)


class ImapProxy:
    """Threaded line-aware proxy: one listener, two pump threads per connection."""

    def __init__(
        self,
        upstream_port: int,
        *,
        drop_on: Pattern | None = None,
        stall_on: Pattern | None = None,
        rewrite_up: Iterable[Rewrite] = (),
        rewrite_down: Iterable[Rewrite] = (),
        bye_text: bytes = b"proxy closing the connection",
        stall_for: float = 10.0,
    ):
        self.upstream_port = upstream_port
        self.drop_on = _compile(drop_on)
        self.stall_on = _compile(stall_on)
        self.rewrite_up = [(_compile(p), r) for p, r in rewrite_up]
        self.rewrite_down = [(_compile(p), r) for p, r in rewrite_down]
        self.bye_text = bye_text
        self.stall_for = stall_for
        self.commands: list[bytes] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        # accept() in another thread does not wake up on close(): poll for stop().
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def __enter__(self) -> ImapProxy:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        self._spawn(self._accept_loop)

    def stop(self) -> None:
        """Close the listener and every connection; wait (bounded) for the threads."""
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.sever()
        for thread in list(self._threads):
            thread.join(timeout=2)

    def sever(self) -> None:
        """Close every live connection now, without a word (a network cut)."""
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            _close(sock)

    def logins(self) -> int:
        return sum(1 for line in self.commands if re.match(rb"\S+ LOGIN\b", line, re.I))

    # -- internals ----------------------------------------------------------

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self.connections += 1
                self._sockets.update((client, upstream))
            self._spawn(self._pump_up, client, upstream)
            self._spawn(self._pump_down, upstream, client)

    def _pump_up(self, client: socket.socket, upstream: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                buffer += data
                while b"\r\n" in buffer:
                    line, buffer = buffer.split(b"\r\n", 1)
                    self.commands.append(_redact(line))
                    if self.drop_on and self.drop_on.search(line):
                        client.sendall(b"* BYE " + self.bye_text + b"\r\n")
                        return
                    if self.stall_on and self.stall_on.search(line):
                        self._stopped.wait(self.stall_for)
                        return
                    upstream.sendall(_apply(self.rewrite_up, line) + b"\r\n")
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)

    def _pump_down(self, upstream: socket.socket, client: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                if not self.rewrite_down:
                    client.sendall(data)
                    continue
                # Rewrites work on whole lines; a partial line waits for its end.
                buffer += data
                lines = buffer.split(b"\r\n")
                buffer = lines.pop()
                if lines:
                    out = b"".join(_apply(self.rewrite_down, line) + b"\r\n" for line in lines)
                    client.sendall(out)
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)


def _apply(rewrites: list[tuple[re.Pattern[bytes], bytes]], line: bytes) -> bytes:
    for pattern, replacement in rewrites:
        line = pattern.sub(replacement, line)
    return line


def _redact(line: bytes) -> bytes:
    match = re.match(rb"(\S+ LOGIN)\b", line, re.IGNORECASE)
    return match.group(1) + b" ***" if match else line


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
