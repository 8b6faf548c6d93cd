"""A fake OpenAI-compatible model server for tests: a real HTTP server on loopback (its own thread) that streams
real SSE over the socket and records every request.

The answer to a request is derived from what it was sent: `reply(messages)` is "Answer N to: <last user text>"
split into words, N being the number of user messages in the request, so a test can tell from the content which
path the model was given. Knobs: `token_delay` (seconds between words), `words` (pad the answer to that many
words), `fail_status` (answer every completion with that HTTP status and an OpenAI error body).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.conftest import free_port


def reply(messages: list[dict[str, Any]], words: int = 0) -> str:
    """The answer the fake gives for `messages` (deterministic)."""
    users = [m for m in messages if m.get("role") == "user"]
    last = str(users[-1].get("content", "")) if users else ""
    text = f"Answer {len(users)} to: {last}"
    pad = [f"w{i}" for i in range(max(0, words - len(text.split())))]
    return " ".join([text, *pad])


class FakeOpenAI:
    """`with FakeOpenAI() as up:` serves `up.base_url` (…/v1) until the block ends."""

    def __init__(self, *, token_delay: float = 0.0, words: int = 0) -> None:
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        self.token_delay = token_delay
        self.words = words
        self.fail_status: int | None = None
        self.models = ["tiny"]
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def chats(self) -> list[list[dict[str, Any]]]:
        """The `messages` of every completion request, in arrival order."""
        return [r["messages"] for r in self.requests if "messages" in r]

    def __enter__(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:  # quiet
                pass

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")  # no keep-alive: a stopped fake is gone at once
                self.close_connection = True
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._json(
                        200, {"object": "list", "data": [{"id": m, "object": "model"} for m in fake.models]}
                    )
                else:
                    self._json(404, {"error": {"message": "not here"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append(body)
                if fake.fail_status is not None:
                    self._json(fake.fail_status, {"error": {"message": "the model is overloaded"}})
                    return
                if body.get("model") not in fake.models:
                    self._json(404, {"error": {"message": f"model {body.get('model')} not found"}})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.close_connection = True
                self.end_headers()
                words = reply(body["messages"], fake.words).split(" ")
                try:
                    for i, word in enumerate(words):
                        piece = word if i == 0 else " " + word
                        chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                        self._chunk(f"data: {json.dumps(chunk)}\n\n")
                        if fake.token_delay:
                            time.sleep(fake.token_delay)
                    self._chunk("data: [DONE]\n\n")
                    self._chunk("")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away (a stop)

            def _chunk(self, text: str) -> None:
                data = text.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
