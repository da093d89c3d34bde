"""Layer 1 (pure Python, no Redis traffic): Redis URLs, parsed and checked in one place.

:func:`parse_url` is what both the system checks (``manage.py check``) and
:func:`rpcapp.transport.connect` use, so a URL that passes the check is one
``connect`` understands. :func:`mask_url` hides the password for messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import ConfigurationError

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster")


@dataclass(frozen=True)
class RedisAddress:
    """A parsed Redis URL: ``hosts`` as (host, port); ``master`` for Sentinel."""

    url: str
    scheme: str
    hosts: tuple[tuple[str, int | None], ...]
    db: int
    master: str | None = None
    path: str = ""  # unix:// socket path
    password: str | None = None

    @property
    def kind(self) -> str:
        """``plain``, ``unix``, ``sentinel`` or ``cluster``."""
        return "unix" if self.scheme == "unix" else self.scheme.rpartition("+")[2] if "+" in self.scheme else "plain"

    @property
    def tls(self) -> bool:
        return self.scheme.startswith("rediss")


def parse_url(url: object) -> RedisAddress:
    """The parsed URL, or :class:`ConfigurationError` saying what is wrong."""
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"a Redis URL must be a non-empty string, not {url!r}")
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in SCHEMES:
        raise _bad(url, f"unsupported scheme {scheme!r} (use one of {', '.join(s + '://' for s in SCHEMES)})")
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else None
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if scheme == "unix":
        if not parts.path or parts.path == "/":
            raise _bad(url, "a unix:// URL needs the socket's path, e.g. unix:///run/redis.sock")
        db_text = parse_qs(parts.query).get("db", ["0"])[0]
        return RedisAddress(url, scheme, (), _db(url, db_text), path=parts.path, password=password)
    entries = netloc.split(",")
    if scheme in ("redis", "rediss"):
        if len(entries) > 1:
            raise _bad(url, f"a {scheme}:// URL takes one host (several hosts: redis+sentinel:// or redis+cluster://)")
        return RedisAddress(url, scheme, (_host(url, entries[0], needs_port=False),), _db(url, parts.path.strip("/") or "0"), password=password)
    hosts = tuple(_host(url, entry, needs_port=True) for entry in entries)
    segments = [s for s in parts.path.split("/") if s]
    if scheme.endswith("+sentinel"):
        if not segments:
            raise _bad(url, "a Sentinel URL needs the master name after the hosts, e.g. redis+sentinel://s1:26379,s2:26379/mymaster/0")
        db = _db(url, segments[1]) if len(segments) > 1 else 0
        return RedisAddress(url, scheme, hosts, db, master=unquote(segments[0]), password=password)
    if segments and _db(url, segments[0]) != 0:
        raise _bad(url, "a Redis Cluster has only database 0")
    return RedisAddress(url, scheme, hosts, 0, password=password)


_PORTED = re.compile(r"^(?P<host>\[[^\]]*\]|[^:\[\]]*)(?::(?P<port>[^:]*))?$")


def _host(url: str, entry: str, needs_port: bool) -> tuple[str, int | None]:
    match = _PORTED.match(entry)
    if match is None or not match["host"].strip("[]"):
        raise _bad(url, f"empty or malformed host {entry!r}" + (" (every host needs host:port)" if needs_port else ""))
    host, port = match["host"].strip("[]"), match["port"]
    if port is None:
        if needs_port:
            raise _bad(url, f"host {entry!r} has no port (every host needs host:port)")
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise _bad(url, f"bad port {port!r} of host {host!r} (a number from 1 to 65535)")
    return host, int(port)


def _db(url: str, text: str) -> int:
    if not text.isdigit():
        raise _bad(url, f"bad database number {text!r} (an integer from 0)")
    return int(text)


def _bad(url: str, why: str) -> ConfigurationError:
    return ConfigurationError(f"invalid Redis URL {mask_url(url)}: {why}")


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (safe for logs and messages)."""
    head, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    userinfo, at, after = rest.partition("/")[0].rpartition("@")
    path = rest[len(userinfo) + 1 + len(after):]
    user, colon, _ = userinfo.partition(":")
    return f"{head}://{user}{':***' if colon else ''}@{after}{path}"
