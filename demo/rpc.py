"""The demo's procedures: the classic calculator and Fibonacci examples."""

from __future__ import annotations

from rpcapp import procedure


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
