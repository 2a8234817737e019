"""A real redis-server on a free loopback port, without persistence, for tests, benchmarks and load tests.

    with RedisServer(workdir) as server:   # or server.start() ... server.stop()
        use(server.url)                    # redis://127.0.0.1:<port>/0
        server.restart()                   # same port: what a Redis outage and recovery look like

The port is chosen when the object is made, so :meth:`stop` and :meth:`start` bring the same server
back at the same URL.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from harness.ports import LOOPBACK, free_port

FALLBACK_BINARY = "/usr/bin/redis-server"


class RedisServerNotFound(RuntimeError):
    """No redis-server binary on this machine."""


def find_redis_server(binary: str | None = None) -> str:
    """``binary`` if given, else redis-server on PATH, else the Debian package's path; raises if none exists."""
    exe = binary or shutil.which("redis-server") or FALLBACK_BINARY
    if not Path(exe).exists() and shutil.which(exe) is None:
        raise RedisServerNotFound("redis-server not found (apt-get install redis-server, or make system-deps)")
    return exe


def ping(port: int, host: str = LOOPBACK, timeout_s: float = 0.2) -> bool:
    """True when a Redis answers PING on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process (no RDB, no AOF) on loopback; ``log_path`` keeps its output, else it is dropped."""

    def __init__(self, workdir: Path | None = None, *, binary: str | None = None, log_path: Path | None = None,
                 port: int | None = None, start_timeout_s: float = 15.0):
        self.binary = find_redis_server(binary)
        self.port = port or free_port()
        self.workdir = workdir
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._starts = 0

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def command(self) -> list[str]:
        cmd = [self.binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
               "--protected-mode", "yes"]
        if self.workdir is not None:
            cmd += ["--dir", str(self.workdir)]
        return cmd

    def start(self) -> RedisServer:
        """Start the process and wait until it answers PING; raises RuntimeError if it does not."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            # A fresh log for a fresh server; a restart appends to it.
            self._log = out = self.log_path.open("ab" if self._starts else "wb")
        self._starts += 1
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout_s
        while not ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                where = f" (log: {self.log_path})" if self.log_path is not None else ""
                raise RuntimeError(f"redis-server did not start{where}")
            time.sleep(0.05)
        return self

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code (None if it was not running)."""
        code: int | None = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            code = self.proc.returncode
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def restart(self) -> RedisServer:
        """Stop and start again on the same port (an empty Redis: nothing is persisted)."""
        self.stop()
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
