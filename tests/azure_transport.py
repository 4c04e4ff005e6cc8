"""Transport-level doubles for Azure services without a local emulator (ARM, Key Vault).

The SDK's whole pipeline runs (serialization, auth and challenge policies, retries, LRO polling) over
the real ``RequestsTransport``; only the socket is replaced by a ``requests`` adapter that answers
with hand-written responses in the services' documented shapes and records every request.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport
from requests.adapters import BaseAdapter
from urllib3.response import HTTPResponse


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[requests.PreparedRequest], Reply]


class _Adapter(BaseAdapter):
    def __init__(self, handler: Handler, log: list[requests.PreparedRequest]) -> None:
        super().__init__()
        self.handler = handler
        self.log = log

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.log.append(request)
        reply = self.handler(request)
        content = b"" if reply.body is None else (reply.body if isinstance(reply.body, bytes)
                                                   else json.dumps(reply.body).encode())
        headers = {"Content-Type": "application/json; charset=utf-8", "x-ms-request-id": "test-request",
                   **reply.headers}
        raw = HTTPResponse(body=io.BytesIO(content), headers=headers, status=reply.status, preload_content=False,
                           decode_content=False)
        return requests.adapters.HTTPAdapter().build_response(request, raw)

    def close(self) -> None:
        pass


class FakeTransport:
    """A ``RequestsTransport`` whose socket is ``handler``; ``requests`` lists what the SDK sent."""

    def __init__(self, handler: Handler) -> None:
        self.requests: list[requests.PreparedRequest] = []
        session = requests.Session()
        adapter = _Adapter(handler, self.requests)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        self.transport = RequestsTransport(session=session, session_owner=False)


class StaticCredential:
    """A TokenCredential that hands out a fixed bearer token and records the scopes asked for."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("test-token", 4102444800)
