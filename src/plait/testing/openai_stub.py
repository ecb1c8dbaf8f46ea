"""A small, honest OpenAI-compatible chat server for tests, on 127.0.0.1.

It answers ``POST /v1/chat/completions`` as a model server would — a reply, the
model's name, a finish reason and token usage (words counted as tokens) — and
``GET /v1/models``. The last user message can carry directives that make it behave
like a busy or broken server:

==================  ========================================================
``[delay=0.3]``     wait 0.3 s before answering
``[429x2]``         answer the first two requests of this message with 429
``[500x1]``         answer the first request of this message with 500
``[retry_after=1]`` the ``Retry-After`` seconds sent with a 429 (default 0)
``[json]``          reply with a JSON object echoing the message
``[badjson]``       reply with text that is not JSON
==================  ========================================================

Every other reply is ``"reply to: <message>"``. The server counts requests, the most
in flight at once, and how often each message was asked.

Usage::

    with OpenAIStubServer() as server:
        backend = OpenAIInferenceBackend("stub-model", base_url=server.url)
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from collections import Counter
from types import TracebackType
from typing import Any

__all__ = ["OpenAIStubServer"]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _send(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, {"object": "list", "data": [{"id": "stub-model", "object": "model"}]})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        request = json.loads(self.rfile.read(length) or b"{}")
        stub = self.server.stub
        with stub.lock:
            stub.in_flight += 1
            stub.requests += 1
            stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
        try:
            self._answer(stub, request)
        finally:
            with stub.lock:
                stub.in_flight -= 1

    def _answer(self, stub: OpenAIStubServer, request: dict[str, Any]) -> None:
        messages = request.get("messages", [])
        user: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        text = str(user.get("content", ""))
        with stub.lock:
            stub.asked[text] += 1
            seen = stub.asked[text]
        if delay := re.search(r"\[delay=([\d.]+)\]", text):
            time.sleep(float(delay.group(1)))
        for code in (429, 500):
            times = re.search(rf"\[{code}x(\d+)\]", text)
            if times and seen <= int(times.group(1)):
                after = re.search(r"\[retry_after=([\d.]+)\]", text)
                headers = {"Retry-After": after.group(1) if after else "0"} if code == 429 else {}
                self._send(code, {"error": {"message": f"stub {code}", "code": code}}, headers)
                return
        if "[json]" in text:
            reply = json.dumps({"echo": text})
        elif "[badjson]" in text:
            reply = "this is {not json"
        else:
            reply = f"reply to: {text}"
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        completion_tokens = len(reply.split())
        self._send(
            200,
            {
                "id": f"chatcmpl-{stub.requests}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.get("model", "stub-model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    stub: OpenAIStubServer


class OpenAIStubServer:
    """The stub server, run in a background thread (see the module docstring).

    Attributes:
        url: the base URL to give an OpenAI client (``http://127.0.0.1:<port>/v1``).
        requests: requests received.
        max_in_flight: the most requests handled at the same time.
        asked: how many times each message text was asked.
    """

    def __init__(self, port: int = 0) -> None:
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.stub = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self.lock = threading.Lock()
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.asked: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> OpenAIStubServer:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OpenAIStubServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
