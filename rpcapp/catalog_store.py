"""Layer 3: the service catalog in the database, and its copy in Redis.

The database is the source of truth, edited in the admin. Every save or
delete of a Service, Procedure or Provider (signals, on commit) pushes the
affected services' configs to Redis and announces them, where every
process's ``CatalogCache`` picks them up (layer 2); ``runrpcworker`` also
pushes the whole catalog every ``CATALOG_REFRESH / 2`` seconds, for changes
that bypass signals (``QuerySet.update()``, raw SQL). Nothing on the call
path reads the database. Provider rows follow Redis: each worker writes its
own (``rpcapp.maintenance.WorkerDuties``) and :func:`refresh_providers`
(the ``reap_providers`` job, the admin's provider list) the rest.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterable
from typing import Any

from django.db import DatabaseError, reset_queries, transaction
from django.utils import timezone

from . import conf
from .catalog import ProcedureConfig, ProviderConfig, ServiceConfig
from .errors import RpcError
from .models import Procedure, Provider, Service
from .providers import parse_all
from .registry import Registry

log = logging.getLogger("rpcapp.catalog")


def config_of(service: Service, providers: Iterable[Provider] | None = None) -> ServiceConfig:
    procs = {
        p.name: ProcedureConfig(
            enabled=p.enabled,
            timeout=p.timeout,
            rate_limit=p.rate_limit or None,
            retries=p.retries,
            retry_backoff=p.retry_backoff,
            hedge_after=p.hedge_after,
        )
        for p in service.procedures.all()
    }
    if providers is None:
        providers = [p for p in Provider.objects.all() if service.name in (p.services or [])]
    return ServiceConfig(
        known=True,
        enabled=service.enabled,
        draining=service.draining,
        policy=service.policy,
        hash_argument=service.hash_argument,
        default_timeout=service.default_timeout,
        rate_limit=service.rate_limit or None,
        procedures=procs,
        providers={p.id: ProviderConfig(weight=p.weight, draining=p.drain) for p in providers if p.weight != 1 or p.drain},
        allowed_groups=tuple(sorted(g.name for g in service.allowed_groups.all())),
    )


def push(names: Iterable[str] | None = None) -> None:
    """Copy these services' configs (default: all) from the database to Redis."""
    from .runtime import get_client

    services = Service.objects.prefetch_related("procedures")
    wanted = None if names is None else set(names)
    if wanted is not None:
        services = services.filter(name__in=wanted)
    providers = list(Provider.objects.all())
    configs = {}
    for svc in services:
        configs[svc.name] = config_of(svc, [p for p in providers if svc.name in (p.services or [])]).to_wire()
    removed = sorted(wanted - set(configs)) if wanted is not None else []
    transport = get_client().transport
    if names is None:  # the periodic full push: announce only what differs from Redis
        current = transport.catalog_all()
        configs = {k: v for k, v in configs.items() if current.get(k) != v}
        removed = sorted(set(current) - {svc.name for svc in services})
    if configs or removed:
        transport.catalog_put(configs, removed)


def push_on_commit(names: Iterable[str]) -> None:
    names = sorted(set(names))

    def run() -> None:
        try:
            push(names)
        except RpcError as exc:  # Redis away: the periodic push of runrpcworker catches up
            log.warning("could not publish catalog changes of %s: %s", ", ".join(names), exc)

    transaction.on_commit(run)


def sync_registry(registry: Registry, services: Iterable[str]) -> None:
    """Create or update the catalog rows of what this code serves. Code fields
    are refreshed; operational fields are only set when a row is created."""
    for name in services:
        service, _ = Service.objects.get_or_create(name=name)
        for proc in registry.for_service(name):
            spec = proc.spec
            code = {
                "signature": spec.signature.text(),
                "doc": spec.doc,
                "idempotent": spec.idempotent,
                "lock": spec.lock or "",
                "stream": spec.stream,
            }
            row, created = Procedure.objects.get_or_create(
                name=spec.name, defaults={**code, "service": service, "timeout": spec.timeout, "rate_limit": spec.rate_limit or ""}
            )
            if not created and any(getattr(row, k) != v for k, v in code.items()):
                for k, v in code.items():
                    setattr(row, k, v)
                row.save(update_fields=list(code))


def record_provider(info: dict[str, Any]) -> None:
    """Create or update a Provider row from a worker's heartbeat record (an
    update of live state only, which changes nothing callers use: no push)."""
    fields = {
        "host": info.get("host", ""),
        "pid": info.get("pid"),
        "services": info.get("services", []),
        "concurrency": info.get("concurrency", 0),
        "started_at": _when(info.get("started_at")),
        "last_heartbeat": _when(info.get("heartbeat")),
        "state": info.get("state", "live"),
        "calls_served": info.get("calls_served", 0),
        "in_flight": info.get("in_flight", 0),
    }
    if not Provider.objects.filter(id=info["id"]).update(**fields):
        Provider.objects.create(id=info["id"], **fields)


def live_providers() -> dict[str, dict[str, Any]]:
    """Every provider record in Redis for the catalog's services, with its state
    as it is now ("dead" once its heartbeat is older than PROVIDER_TTL)."""
    from .runtime import get_client

    transport = get_client().transport
    ttl = conf.get().PROVIDER_TTL
    now = timezone.now().timestamp()
    out: dict[str, dict[str, Any]] = {}
    from .registry import default_registry

    for name in sorted(set(Service.objects.values_list("name", flat=True)) | set(default_registry.services())):
        for record in parse_all(transport.providers_info(name)):
            info = record.as_dict()
            if not record.fresh(now, ttl):
                info["state"] = "dead"
            info["heartbeat_age"] = max(0.0, now - record.heartbeat)
            out[record.id] = info
    return out


def refresh_providers() -> dict[str, dict[str, Any]]:
    """Bring the Provider rows up to date with Redis; rows Redis no longer
    knows are marked dead. Returns the live records."""
    live = live_providers()
    for info in live.values():
        record_provider(info)
    Provider.objects.exclude(id__in=list(live)).exclude(state="dead").update(state="dead", in_flight=0)
    return live


def _when(ts: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(float(ts), tz=dt.UTC)
    except (TypeError, ValueError):
        return None


def start_refresher(stop: threading.Event) -> threading.Thread:
    """Push the whole catalog every CATALOG_REFRESH / 2 seconds (a daemon thread)."""

    def loop() -> None:
        while not stop.wait(max(0.5, conf.get().CATALOG_REFRESH / 2)):
            try:
                push()
            except (RpcError, DatabaseError) as exc:
                log.warning("catalog refresh failed: %s", exc)
            reset_queries()  # with DEBUG on, Django would keep every query of this thread

    thread = threading.Thread(target=loop, name="rpcapp-catalog-refresh", daemon=True)
    thread.start()
    return thread
