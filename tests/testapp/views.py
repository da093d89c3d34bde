"""Async views calling procedures, as an ASGI site would."""

from __future__ import annotations

from collections.abc import AsyncIterator

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse

from rpcapp import rpc


async def total(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"sum": await rpc.acall("tests.echo", int(request.GET["a"]) + int(request.GET["b"]))})


async def counting(request: HttpRequest) -> StreamingHttpResponse:
    async def lines() -> AsyncIterator[str]:
        async for n in rpc.astream("tests.count_up", int(request.GET["n"])):
            yield f"{n}\n"

    return StreamingHttpResponse(lines(), content_type="text/plain")
