"""The Celery side of the comparison: a no-op task, Redis broker and result
backend on the bench's own redis-server (``BENCH_REDIS_URL``).

Worker: ``celery -A bench.celery_app worker -Q bench -c 2 -P prefork``
(started by ``bench/run.py``). Independent of Django and of rpcapp.
"""

from __future__ import annotations

import os

from celery import Celery

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = "bench"

app = Celery("bench", broker=URL, backend=URL)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=False,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    task_send_sent_event=False,
)


@app.task(name="bench.noop")
def noop() -> None:
    return None
