"""The demo's procedures (calculator, Fibonacci, inventory under a lock)
and its ``orders.created`` event with its subscribers."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

from rpcapp import procedure, publish, subscriber

log = logging.getLogger("demo")


@procedure("calculator.add", timeout=2.0, idempotent=True)
def add(a: float, b: float) -> float:
    """Return a + b."""
    return a + b


@procedure("calculator.subtract", timeout=2.0, idempotent=True)
def subtract(a: float, b: float) -> float:
    """Return a - b."""
    return a - b


@procedure("calculator.multiply", timeout=2.0, idempotent=True)
def multiply(a: float, b: float) -> float:
    """Return a * b."""
    return a * b


@procedure("calculator.divide", timeout=2.0, idempotent=True)
def divide(a: float, b: float) -> float:
    """Return a / b; dividing by zero raises (the caller gets a RemoteError)."""
    return a / b


@procedure("math.fib", timeout=5.0, idempotent=True)
def fib(n: int) -> int:
    """The n-th Fibonacci number (fib(0) = 0, fib(1) = 1), for 0 <= n <= 92
    (the results that fit a signed 64-bit integer, the JSON codec's limit)."""
    if n < 0 or n > 92:
        raise ValueError("n must be between 0 and 92")
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


STOCK: dict[str, int] = {}


@procedure("inventory.reserve", timeout=5.0, lock="inventory:{sku}")
def reserve(sku: str, qty: int) -> dict[str, int | str]:
    """Reserve ``qty`` units of ``sku`` (100 in stock to start with).

    The lock ``inventory:{sku}`` is held while this runs, so two reservations
    of one SKU never interleave, across every worker; different SKUs run in
    parallel. (The demo keeps its stock in the worker's memory; a real one
    would read and write a shared database under the same lock.)"""
    if qty <= 0:
        raise ValueError("qty must be positive")
    left = STOCK.get(sku, 100)
    if qty > left:
        raise ValueError(f"only {left} of {sku} left")
    STOCK[sku] = left - qty
    return {"sku": sku, "reserved": qty, "left": left - qty}


@procedure("math.fib_sequence", stream=True, timeout=30.0)
def fib_sequence(count: int) -> Iterator[int]:
    """Stream the first ``count`` Fibonacci numbers (at most 93), one by one."""
    if count < 0 or count > 93:
        raise ValueError("count must be between 0 and 93")
    a, b = 0, 1
    for _ in range(count):
        yield a
        a, b = b, a + b


@procedure("orders.place", timeout=5.0)
def place(sku: str, qty: int, email: str) -> dict[str, Any]:
    """Reserve stock (a nested call to the lock-guarded ``inventory.reserve``)
    and publish ``orders.created``; returns the order."""
    from rpcapp import rpc

    reserved = rpc.call("inventory.reserve", sku, qty)
    order = {"order": _next_order(), "sku": sku, "qty": qty, "email": email, "left": reserved["left"]}
    publish("orders.created", order)
    return order


def _next_order() -> str:
    return uuid.uuid4().hex[:12]


CONFIRMATIONS: list[Any] = []  # orders confirmed by this worker
RECENT_ORDERS: list[Any] = []  # every worker's view of the latest orders (broadcast)


@subscriber("orders.created", service="notifications")
def send_confirmation(payload: dict[str, Any]) -> None:
    """Once per order, on one ``notifications`` worker: "send" the email."""
    log.info("order %s: confirmation sent to %s", payload["order"], payload.get("email"))
    CONFIRMATIONS.append(payload["order"])


@subscriber("orders.created", service="notifications", broadcast=True)
def remember_order(payload: dict[str, Any]) -> None:
    """In every ``notifications`` worker: keep an in-memory list of recent orders
    (the kind of per-process cache a broadcast keeps fresh)."""
    RECENT_ORDERS.append(payload["order"])
    del RECENT_ORDERS[:-100]
