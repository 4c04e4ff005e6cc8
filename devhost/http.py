"""The devhost's HTTP front door: function routes, the admin API, webhooks and the local topic.

A threaded server on 127.0.0.1 (never another interface). Every error is JSON
``{"error": {"code", "message"}}``; an exception in a function is a 500 and the server keeps serving.
Request lines are logged without their query string: ``code=`` carries a key.

Hostile requests are refused, never served by a stuck or crashed thread: a connection idle for
``IDLE_TIMEOUT_SECONDS`` is closed; a body not received in full within ``BODY_READ_TIMEOUT_SECONDS`` is
answered 408 and the connection closed; JSON nested past the parser's recursion limit is a 400.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import azure.functions as func

from continuity.kernel.errors import ContinuityError, InvalidRequest, Unauthorized
from devhost.keys import presented_key

if TYPE_CHECKING:
    from devhost.host import Host
    from devhost.index import IndexedFunction

logger = logging.getLogger(__name__)

Response = tuple[int, dict[str, str], bytes]
DURABLE_PREFIX = "/runtime/webhooks/durabletask/"
EVENTGRID_WEBHOOK = "/runtime/webhooks/eventgrid"
TOPIC_PATH = "/eventgrid/topics/continuity/api/events"
# A keep-alive connection idle this long is closed (longer than aiohttp's 15 s client keep-alive, so the durable
# client closes its idle connections first and never sends on one the host is closing).
IDLE_TIMEOUT_SECONDS = 60.0
# A request body must arrive in full within this time after its headers, else 408 and the connection closes.
BODY_READ_TIMEOUT_SECONDS = 10.0


class RequestTimeout(ContinuityError):
    code = "request_timeout"
    http_status = 408


class PayloadTooLarge(ContinuityError):
    code = "payload_too_large"
    http_status = 413


class NotFound(ContinuityError):
    code = "not_found"
    http_status = 404


class MethodNotAllowed(ContinuityError):
    code = "method_not_allowed"
    http_status = 405

    def __init__(self, message: str, allowed: list[str]) -> None:
        super().__init__(message)
        self.allowed = allowed


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body


def json_response(status: int, payload: Any) -> Response:
    return status, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(payload, default=str).encode()


def from_function_result(function: IndexedFunction, result: Any) -> Response:
    """Turn what an HTTP function returned into a response, as the worker's HttpResponseConverter does."""
    if isinstance(result, func.HttpResponse):
        headers = {k: v for k, v in result.headers.items()}
        if not any(k.lower() == "content-type" for k in headers):
            mimetype = result.mimetype or "text/plain"
            headers["Content-Type"] = f"{mimetype}; charset={result.charset}" if mimetype.startswith("text/") \
                else mimetype
        return result.status_code, headers, result.get_body() or b""
    if isinstance(result, str):
        return 200, {"Content-Type": "text/plain; charset=utf-8"}, result.encode()
    if result is None:
        return 204, {}, b""
    return error_response(500, "function_failed", f"function {function.name!r} returned {type(result).__name__}; "
                                                  f"an HTTP function returns func.HttpResponse or str")


class DevhostServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, host: Host, port: int, max_request_bytes: int) -> None:
        self.host = host
        self.max_request_bytes = max_request_bytes
        super().__init__(("127.0.0.1", port), Handler)


class Handler(BaseHTTPRequestHandler):
    server: DevhostServer
    protocol_version = "HTTP/1.1"
    server_version = "continuity-devhost"
    sys_version = ""
    timeout = IDLE_TIMEOUT_SECONDS  # socket timeout while waiting for a request line and headers

    # ---- plumbing ------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's signature
        pass  # every request is logged once, without its query string, in _handle

    def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler naming
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET  # noqa: N815

    def _read_body(self) -> bytes:
        """The request body, read within ``BODY_READ_TIMEOUT_SECONDS`` in all.

        :raises RequestTimeout: the client sent less than it announced (the connection is closed).
        """
        deadline = time.monotonic() + BODY_READ_TIMEOUT_SECONDS
        try:
            return self._read_body_until(deadline)
        except TimeoutError as exc:
            self.close_connection = True
            raise RequestTimeout(f"the request body did not arrive within {BODY_READ_TIMEOUT_SECONDS:.0f} s "
                                 f"(Content-Length larger than the bytes sent?)") from exc
        finally:
            with contextlib.suppress(OSError):  # the peer may have gone already
                self.connection.settimeout(self.timeout)

    def _read(self, size: int, deadline: float) -> bytes:
        """Exactly ``size`` bytes (fewer only at end of stream), each wait bounded by what is left of the deadline."""
        parts: list[bytes] = []
        remaining = size
        while remaining > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("body read deadline passed")
            self.connection.settimeout(left)
            chunk = self.rfile.read1(min(remaining, 65536))
            if not chunk:
                break
            parts.append(chunk)
            remaining -= len(chunk)
        return b"".join(parts)

    def _readline(self, limit: int, deadline: float) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("body read deadline passed")
        self.connection.settimeout(left)
        return bytes(self.rfile.readline(limit))

    def _read_body_until(self, deadline: float) -> bytes:
        limit = self.server.max_request_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size_line = self._readline(1024, deadline).split(b";")[0].strip()
                try:
                    size = int(size_line, 16)
                except ValueError as exc:
                    self.close_connection = True
                    raise InvalidRequest("malformed chunked body") from exc
                if size == 0:
                    while self._readline(1024, deadline) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > limit:
                    self.close_connection = True
                    raise PayloadTooLarge(f"request body exceeds {limit} bytes (CONTINUITY_MAX_REQUEST_BYTES)")
                chunks.append(self._read(size, deadline))
                self._readline(16, deadline)
        raw_length = self.headers.get("Content-Length") or "0"
        try:
            length = int(raw_length)
        except ValueError as exc:
            self.close_connection = True
            raise InvalidRequest(f"Content-Length {raw_length!r} is not a number") from exc
        if length > limit:
            self.close_connection = True  # the body stays unread: this connection cannot be reused
            raise PayloadTooLarge(f"request body of {length} bytes exceeds {limit} bytes "
                                  f"(CONTINUITY_MAX_REQUEST_BYTES)")
        body = self._read(length, deadline) if length > 0 else b""
        if len(body) < length:
            self.close_connection = True
            raise InvalidRequest(f"the connection closed after {len(body)} of {length} body bytes")
        return body

    def _send(self, response: Response) -> None:
        status, headers, body = response
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _handle(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(parsed.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            body = self._read_body()
            response = self._dispatch(self.command, path, query, headers, body, parsed.query)
        except MethodNotAllowed as exc:
            response = error_response(405, exc.code, str(exc), {"Allow": ", ".join(exc.allowed)})
        except ContinuityError as exc:
            response = error_response(exc.http_status, exc.code, str(exc))
        except RecursionError:  # e.g. JSON nested thousands deep, parsed by a webhook: the caller's fault
            response = error_response(400, "invalid_request", "the request body is nested too deeply to parse")
        except Exception:  # noqa: BLE001 - a bug in the devhost itself: 500, logged, keep serving
            logger.exception("devhost error on %s %s", self.command, path)
            response = error_response(500, "devhost_error", "the devhost failed on this request; see its log")
        try:
            self._send(response)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        logger.info("%s %s -> %d", self.command, path, response[0])

    # ---- routing -------------------------------------------------------------------------------
    def _dispatch(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes,
                  raw_query: str) -> Response:
        host = self.server.host
        if path.startswith(DURABLE_PREFIX) or path == DURABLE_PREFIX.rstrip("/"):
            # As in Azure: the durabletask_extension system key or the master key, before anything else.
            if not host.keys.allows_durable(presented_key(headers, query)):
                raise Unauthorized("the Durable management API needs the durabletask_extension system key or "
                                   "the master key (code= or x-functions-key)")
            if host.engine is None:
                return error_response(503, "durable_unavailable", f"the durable engine is not running "
                                                                  f"({host.engine_detail})")
            # The engine decodes the path itself (instance ids may hold '%') and takes every query value.
            raw_path = urllib.parse.urlsplit(self.path).path
            all_values = urllib.parse.parse_qs(raw_query, keep_blank_values=True)
            status, out_headers, out_body = host.engine.handle_management(method, raw_path, all_values, body,
                                                                          headers)
            return int(status), dict(out_headers), bytes(out_body)
        if path == EVENTGRID_WEBHOOK:
            from devhost.eventgrid import handle_webhook

            return handle_webhook(host, method, query, headers, body)
        if path == TOPIC_PATH:
            return host.topic.handle(method, query, headers, body)
        if path == "/admin" or path.startswith("/admin/"):
            return self._admin(method, path, query, headers, body)
        prefix = f"/{host.route_prefix}" if host.route_prefix else ""
        if prefix and not (path == prefix or path.startswith(prefix + "/")):
            raise NotFound(f"no route {path!r}; function routes live under {prefix}/")
        return self._function_route(method, path[len(prefix):], query, headers, body, raw_query)

    def _admin(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
               body: bytes) -> Response:
        host = self.server.host
        if path == "/admin/host/ping":
            return json_response(200, {"state": "Running"}) if host.ready else json_response(503, {"state": "Starting"})
        presented = headers.get("x-functions-key") or query.get("code")
        if not host.keys.allows_admin(presented):
            raise Unauthorized("the admin API needs the master key (x-functions-key header)")
        if path == "/admin/host/status":
            return json_response(200, host.status())
        if path.startswith("/admin/functions/"):
            name = path[len("/admin/functions/"):].strip("/")
            function = host.function(name)
            if method == "GET":
                return json_response(200, {"name": function.name, "config": {"bindings": function.bindings},
                                           "isDisabled": bool(function.unservable), **function.describe()})
            if method == "POST":
                host.admin_invoke(function, body)
                return 202, {}, b""
            raise MethodNotAllowed(f"{method} is not accepted on {path}", ["GET", "POST"])
        raise NotFound(f"no admin endpoint {path!r}")

    def _function_route(self, method: str, subpath: str, query: dict[str, str], headers: dict[str, str],
                        body: bytes, raw_query: str) -> Response:
        host = self.server.host
        allowed: set[str] = set()
        for function in host.http_routes:
            assert function.route is not None
            params = function.route.match(subpath)
            if params is None:
                continue
            if function.methods is not None and method not in function.methods:
                allowed |= function.methods
                continue
            self._authorise(function, query, headers)
            url = f"{host.base_url}{self.path.split('?')[0]}" + (f"?{raw_query}" if raw_query else "")
            request = func.HttpRequest(method=method, url=url, headers=headers, params=query,
                                       route_params=params, body=body)
            try:
                result = host.invoke_http(function, request)
            except ContinuityError as exc:
                return error_response(exc.http_status, exc.code, str(exc))
            return from_function_result(function, result)
        if allowed:
            raise MethodNotAllowed(f"{method} is not allowed on {subpath or '/'}; use {', '.join(sorted(allowed))}",
                                   sorted(allowed))
        raise NotFound(f"no function serves {method} /{host.route_prefix}{subpath}")

    def _authorise(self, function: IndexedFunction, query: dict[str, str], headers: dict[str, str]) -> None:
        level = function.auth_level
        if level == "ANONYMOUS":
            return
        presented = headers.get("x-functions-key") or query.get("code")
        if level == "ADMIN":
            if not self.server.host.keys.allows_admin(presented):
                raise Unauthorized(f"{function.name} needs the master key (code= or x-functions-key)")
            return
        if not self.server.host.keys.allows_function(function.name, presented):
            raise Unauthorized(f"{function.name} needs a function key (code= query parameter or x-functions-key "
                               f"header)")


def serve(host: Host, port: int, max_request_bytes: int) -> DevhostServer:
    """Bind the server (raises OSError when the port is taken); the caller runs ``serve_forever``."""
    return DevhostServer(host, port, max_request_bytes)

