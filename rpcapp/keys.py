"""Layer 0: every Redis key rpcapp uses, built in one place.

A service's keys carry the service in a ``{hash tag}`` so that every
multi-key command of a call stays in one Redis Cluster slot.

Keys and their bounds (``ns`` is the configured namespace, ``svc`` a service):

=================================  =========  ======================================
key                                type       bound
=================================  =========  ======================================
``ns:{svc}:requests``              stream     entries deleted once answered; MAXLEN ~
``ns:{svc}:dead``                  stream     MAXLEN ~ ``DEAD_LETTER_MAX``
``ns:{svc}:consumers``             zset       dead members removed by recovery
``ns:{svc}:providers``             hash       dead members removed by recovery
``ns:{svc}:procedures``            hash       one field per procedure served
``ns:{svc}:stats``                 hash       fixed set of counters
``ns:{svc}:recovery``              string     PX lock, a few seconds
``ns:{svc}:idem:<proc>:<key>``     string     TTL ``IDEMPOTENCY_TTL``
``ns:{svc}:idemw:<proc>:<key>``    list       TTL = the waiting call's deadline
``ns:{svc}:ran:<id>``              string     the entry that took a request id (TTL: its deadline) or an event delivery (TTL: its expiry)
``ns:{svc}:inbox:<provider>``      stream     requests addressed to one provider (policies); deleted with it
``ns:{svc}:inboxes``               set        providers with an inbox; members removed by recovery
``ns:{svc}:rl:<scope>``            string     a rate limit's next free time; PX = its period
``ns:catalog``                     hash       one field per service: its catalog config (JSON)
``ns:history``                     stream     call records on their way to the database; MAXLEN ~ ``HISTORY_STREAM_MAX``
``ns:metrics``                     hash       Prometheus counters: one field per procedure, status and bucket
``ns:catalog:changed``             channel    pub/sub: the name of a service whose config changed
``ns:{svc}:delayed``               zset       event retries waiting for their backoff
``ns:{svc}:credit:<call>``         list       a stream's acknowledgements; TTL = deadline
``ns:topic:{<topic>}``             set        services subscribed to a topic
``ns:reply:{<client>}``            list       emptied by its listener; TTL ``REPLY_TTL``
``ns:broadcast:<topic>``           channel    pub/sub, nothing stored
=================================  =========  ======================================

Events for a subscribing service travel in its request stream (the envelope
has ``kind: "event"``), so they share its consumer group, its bound and its
recovery.
"""

from __future__ import annotations


def service_of(procedure: str) -> str:
    """The service part of a dotted procedure name (before the last dot)."""
    service, dot, method = procedure.rpartition(".")
    if not dot or not service or not method:
        raise ValueError(f"procedure name {procedure!r} is not 'service.method'")
    if any(c in service for c in "@{}"):
        raise ValueError(f"service name {service!r} may not contain '@', '{{' or '}}'")
    return service


def _svc(ns: str, service: str, suffix: str) -> str:
    return f"{ns}:{{{base(service)}}}:{suffix}"


INBOX_SEP = "@"
"""``svc@provider`` names a provider's own queue of a service (its inbox)."""


def inbox_route(service: str, provider: str) -> str:
    """The route of requests addressed to ``provider``: read, acknowledged and
    recovered like a service of its own, with the service's keys and slot."""
    return f"{service}{INBOX_SEP}{provider}"


def base(route: str) -> str:
    """The service of a route (``svc`` for ``svc`` and for ``svc@provider``)."""
    return route.split(INBOX_SEP, 1)[0]


def provider_of(route: str) -> str | None:
    """The provider of an inbox route, else None."""
    parts = route.split(INBOX_SEP, 1)
    return parts[1] if len(parts) == 2 else None


def requests(ns: str, route: str) -> str:
    """The request stream of a service, or of a provider's inbox route."""
    provider = provider_of(route)
    if provider is not None:
        return _svc(ns, route, f"inbox:{provider}")
    return _svc(ns, route, "requests")


def inboxes(ns: str, service: str) -> str:
    return _svc(ns, service, "inboxes")


def rate_limit(ns: str, service: str, scope: str) -> str:
    return _svc(ns, service, f"rl:{scope}")


def history(ns: str) -> str:
    return f"{ns}:history"


def metrics(ns: str) -> str:
    return f"{ns}:metrics"


def catalog(ns: str) -> str:
    return f"{ns}:catalog"


def catalog_changed(ns: str) -> str:
    return f"{ns}:catalog:changed"


def dead_letters(ns: str, service: str) -> str:
    return _svc(ns, service, "dead")


def consumers(ns: str, service: str) -> str:
    return _svc(ns, service, "consumers")


def providers(ns: str, service: str) -> str:
    return _svc(ns, service, "providers")


def procedures(ns: str, service: str) -> str:
    return _svc(ns, service, "procedures")


def stats(ns: str, service: str) -> str:
    return _svc(ns, service, "stats")


def recovery_lock(ns: str, service: str) -> str:
    return _svc(ns, service, "recovery")


def ran(ns: str, service: str, call_id: str) -> str:
    """Which stream entry took request ``call_id`` (a request id runs once)."""
    return _svc(ns, service, f"ran:{call_id}")


def idempotency(ns: str, procedure: str, key: str) -> str:
    return _svc(ns, service_of(procedure), f"idem:{procedure}:{key}")


def idempotency_waiters(ns: str, procedure: str, key: str) -> str:
    return _svc(ns, service_of(procedure), f"idemw:{procedure}:{key}")


def delayed(ns: str, service: str) -> str:
    return _svc(ns, service, "delayed")


def credit(ns: str, service: str, call_id: str) -> str:
    return _svc(ns, service, f"credit:{call_id}")


def topic_subscribers(ns: str, topic: str) -> str:
    return f"{ns}:topic:{{{topic}}}"


def broadcast(ns: str, topic: str) -> str:
    return f"{ns}:broadcast:{topic}"


def reply(ns: str, client_id: str) -> str:
    return f"{ns}:reply:{{{client_id}}}"


def is_reply(ns: str, key: str) -> bool:
    """True if ``key`` is a reply list of namespace ``ns`` (what a signed
    request may name as ``reply_to``; a worker writes to nothing else)."""
    prefix = f"{ns}:reply:{{"
    inner = key[len(prefix) : -1]
    return key.startswith(prefix) and key.endswith("}") and bool(inner) and "{" not in inner and "}" not in inner


def pattern(ns: str) -> str:
    """A SCAN pattern matching every key of a namespace."""
    return f"{ns}:*"


RECORDERS = "recorders"
"""The consumer group of the call-history stream (whoever stores records)."""

GROUP = "workers"
"""The consumer group every worker of a service reads through."""
