"""A caller process for test_client_death.py, run as ``python -m tests.faults.dying_client SPEC``.

SPEC is JSON: a list of ``[procedure, args, timeout]``. Sends every call with
``call_async``, waits until all are written to Redis, prints one JSON line
(``reply_key``, ``ids``) and then sleeps until it is killed.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    import django

    django.setup()
    from rpcapp import runtime

    client = runtime.get_client()
    futures = [client.call_async(name, *args, timeout=timeout) for name, args, timeout in json.loads(sys.argv[1])]
    end = time.monotonic() + 20
    while not all(getattr(f, "rpc_sent", False) or f.done() for f in futures):
        if time.monotonic() > end:
            sys.exit("calls not sent in 20 s")
        time.sleep(0.01)
    failed = [repr(f.exception()) for f in futures if f.done() and f.exception() is not None]
    listener = client._ensure_listener()
    print(json.dumps({"reply_key": listener.reply_key, "ids": [f.rpc_id for f in futures], "failed": failed}), flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
