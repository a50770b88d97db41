"""The physical ceiling: a bare ASGI app that reads the body and answers a fixed JSON.

    python -m uvicorn bench.bare_app:app --loop uvloop --http httptools --no-access-log

No framework, no routing, no form parsing: what uvicorn (uvloop, httptools) alone costs per
request on this machine. Nothing that parses the form and runs a model can come close; the
benchmark reports the service's ratio to it rather than a bar.
"""

from __future__ import annotations

import json

from starlette.types import Receive, Scope, Send

from bench.empty_app import FIXED_PREDICTION

BODY = json.dumps(FIXED_PREDICTION).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    more_body = True
    while more_body:  # read the upload to its end, as any server must; parse nothing
        message = await receive()
        more_body = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
