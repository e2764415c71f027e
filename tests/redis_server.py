"""Start real ``redis-server`` processes on free loopback ports, stop them by PID.

One factory covers every topology the tests need: plain TCP, TLS, ACL users and
unix sockets are options of the same call.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

MIN_VERSION = (7, 0)
PORT_LOCK_DIR = Path("/tmp/elastic-sessions-test-ports")


def redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed: run `apt-get install redis-server` "
            "(./dev test does this for you)."
        )
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    version = next(part for part in out.stdout.split() if part.startswith("v="))[2:]
    if tuple(int(x) for x in version.split(".")[:2]) < MIN_VERSION:
        raise RuntimeError(f"redis-server {version} is too old; 7.0 or newer is needed.")
    return binary


def claim_free_port() -> int:
    """A loopback port nobody listens on, reserved by an exclusive lock file."""
    PORT_LOCK_DIR.mkdir(exist_ok=True)
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        try:
            fd = os.open(PORT_LOCK_DIR / str(port), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return port
    raise RuntimeError("No free loopback port found.")


def release_port(port: int) -> None:
    (PORT_LOCK_DIR / str(port)).unlink(missing_ok=True)


@dataclass
class RedisServer:
    datadir: Path
    port: int = 0
    unix_socket: Path | None = None
    tls: dict[str, Path] | None = None
    acl_file: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.unix_socket is not None:
            return f"unix://{self.unix_socket}"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        args = [
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--dir", str(self.datadir),
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "no",
            "--logfile", str(self.datadir / "redis.log"),
            "--enable-debug-command", "local",
        ]  # fmt: skip
        if self.unix_socket is not None:
            args += [
                "--port",
                "0",
                "--unixsocket",
                str(self.unix_socket),
                "--unixsocketperm",
                "700",
            ]
        elif self.tls:
            args += [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls["cert"]),
                "--tls-key-file", str(self.tls["key"]),
                "--tls-ca-cert-file", str(self.tls["ca"]),
                "--tls-auth-clients", "optional",
            ]  # fmt: skip
        else:
            args += ["--port", str(self.port)]
        if self.acl_file is not None:
            args += ["--aclfile", str(self.acl_file)]
        return args + self.extra_args

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                log = (self.datadir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited at start:\n{err}\n{log}")
            if self._ready():
                return self
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer within 10 s ({self.url})")

    def _ready(self) -> bool:
        if self.unix_socket is not None:
            return self.unix_socket.exists()
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def kill(self) -> None:
        """SIGKILL: the crash nobody saw coming (no save, no goodbye)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        self._forget_process()

    def _forget_process(self) -> None:
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._forget_process()

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()

    def client(self, **kwargs: object) -> redis.Redis:
        """An admin client that bypasses the package (for inspecting what it stored)."""
        if self.tls:
            kwargs.setdefault("ssl_ca_certs", str(self.tls["ca"]))
        return redis.Redis.from_url(self.url, **kwargs)
