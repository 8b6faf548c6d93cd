"""Models a generation streams from: the built-in `demo` model and any OpenAI-compatible upstream.

A model is an async generator of events `{type, data}` for one answer; it may ask the requesting tab through an
event call. The demo model needs no model server: a deterministic answer derived from the prompt, statuses, a
citation, and a confirmation or input event call when the prompt asks for one, at a configurable token rate.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from chatwire.errors import ChatwireError, ErrorCode

Event = dict[str, Any]
Caller = Callable[[Event], Awaitable[Any]]

DEMO_MODEL_ID = "demo"

_SENTENCES = (
    "chatwire routes every token of an answer to each open tab of its user.",
    "A message is stored as its own row, so streaming appends instead of rewriting the chat.",
    "Deltas are gathered in memory and written together, which keeps the database quiet.",
    "Each event of a message passes one gate, so all tabs and the database see one order.",
    "When a tab reconnects, it can pick up the stream where it left off.",
    "Channels, notes and collaborative documents use the same rooms and the same rules.",
    "An event call asks one tab a question and waits for its answer, with a timeout.",
    "One process with SQLite is enough to start; Redis and PostgreSQL carry a fleet.",
    "Tools can report their progress with status events while the answer is written.",
    "Citations arrive as source events and are kept next to the message they support.",
    "Stopping a generation cancels its task and marks the message as done.",
    "The same reducer rebuilds a chat on the client and stores it on the server.",
)

_LENGTH = re.compile(r"(\d{1,7})\s*(?:tokens?|words?)\b", re.IGNORECASE)


def demo_answer(prompt: str, *, default_tokens: int = 60, max_tokens: int = 100_000) -> list[str]:
    """The demo answer as tokens (words with their trailing space): deterministic for a prompt.

    "N tokens" or "N words" in the prompt sets the length (capped at `max_tokens`).
    """
    match = _LENGTH.search(prompt)
    count = min(int(match.group(1)), max_tokens) if match else default_tokens
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    topic = " ".join(prompt.split()[:8]) or "nothing"
    words = f"You asked about: {topic}.".split()
    while len(words) < count:
        words.extend(rng.choice(_SENTENCES).split())
    words = words[:count]
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message (string content or OpenAI content parts)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
                )
    return ""


def _status(description: str, *, done: bool, action: str = "demo") -> Event:
    return {"type": "status", "data": {"action": action, "description": description, "done": done}}


def _delta(text: str) -> Event:
    return {"type": "chat:message:delta", "data": {"content": text}}


class DemoModel:
    """Streams a real, deterministic answer with statuses, a citation and optional event calls."""

    id = DEMO_MODEL_ID

    def __init__(self, tokens_per_second: float, max_tokens: int = 100_000) -> None:
        self.tokens_per_second = tokens_per_second
        self.max_tokens = max_tokens

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "name": "Demo", "object": "model", "owned_by": "chatwire", "created": 0}

    async def stream(self, messages: list[dict[str, Any]], call: Caller) -> AsyncIterator[Event]:
        prompt = last_user_text(messages)
        lowered = prompt.lower()
        yield _status("Reading the question", done=False, action="thinking")
        name = "friend"
        if "confirm" in lowered:
            answer = await call(
                {
                    "type": "confirmation",
                    "data": {
                        "title": "Look up a source?",
                        "message": "The demo model wants to consult its source before answering. Continue?",
                    },
                }
            )
            if answer is not True:
                yield _status("Stopped: the step was not confirmed", done=True, action="confirmation")
                yield _delta("I did not continue, because the step was not confirmed.")
                return
            yield _status("Confirmed", done=True, action="confirmation")
        if "ask me" in lowered:
            answer = await call(
                {
                    "type": "input",
                    "data": {
                        "title": "Your name",
                        "message": "Whom should the answer address?",
                        "placeholder": "a name",
                    },
                }
            )
            if isinstance(answer, str) and answer.strip():
                name = answer.strip()[:100]
        yield _status("Consulting the chatwire notes", done=False, action="web_search")
        yield {
            "type": "source",
            "data": {
                "source": {
                    "id": "chatwire-readme",
                    "name": "chatwire README",
                    "url": "https://example.invalid/chatwire",
                },
                "document": ["chatwire delivers chat events to every tab and stores each message as a row."],
                "metadata": [{"source": "chatwire README", "name": "README.md"}],
            },
        }
        yield _status("Found 1 source", done=True, action="web_search")
        tokens = demo_answer(prompt, max_tokens=self.max_tokens)
        if name != "friend":
            tokens = [f"Hello {name}, ", *tokens]
        rate = self.tokens_per_second
        start = time.monotonic()
        for i, token in enumerate(tokens):
            if rate > 0:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif i % 64 == 0:
                await asyncio.sleep(0)
            yield _delta(token)
        yield {
            "type": "chat:completion",
            "data": {
                "done": True,
                "usage": {
                    "prompt_tokens": len(prompt.split()),
                    "completion_tokens": len(tokens),
                    "total_tokens": len(prompt.split()) + len(tokens),
                },
            },
        }


def _error_text(body: bytes) -> str:
    """The human part of an upstream's error body (OpenAI's `{error: {message}}`, `{detail}`), else its text."""
    text = body.decode(errors="replace").strip()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return text[:300]
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"][:300]
        for key in ("error", "detail", "message"):
            if isinstance(data.get(key), str):
                return str(data[key])[:300]
    return text[:300]


class OpenAIUpstream:
    """Any OpenAI-compatible server: `GET {base}/models` and streaming `POST {base}/chat/completions`.

    Failures are raised as `ChatwireError(unavailable)` with a sentence a person can read, naming the server
    (`host`), never a Python repr. The last model list it answered is kept, so that while it cannot be reached
    its models can be listed as unavailable instead of vanishing.
    """

    def __init__(self, base_url: str, api_key: str = "", timeout: float = 300.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.host = urlsplit(self.base_url).netloc or self.base_url
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0)
        )
        self.known_models: list[dict[str, Any]] = []

    def failure(self, exc: BaseException) -> ChatwireError:
        """A readable error for a failed exchange with the model server."""
        if isinstance(exc, ChatwireError):
            return exc
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            text = f"The model server at {self.host} could not be reached."
        elif isinstance(exc, httpx.TimeoutException):
            text = f"The model server at {self.host} did not answer in time."
        elif isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
            text = f"The connection to the model server at {self.host} broke off."
        elif isinstance(exc, httpx.HTTPStatusError):
            text = f"The model server at {self.host} answered {exc.response.status_code}."
        elif isinstance(exc, httpx.HTTPError | ValueError):
            text = f"The model server at {self.host} gave an answer that could not be used."
        else:
            text = "The answer failed because of an error in chatwire; the server log has the details."
        return ChatwireError(ErrorCode.UNAVAILABLE, text)

    async def models(self) -> list[dict[str, Any]]:
        try:
            r = await self.client.get("/models", timeout=5.0)
            r.raise_for_status()
            data = r.json().get("data", [])
        except Exception as exc:
            raise self.failure(exc) from exc
        self.known_models = [
            {
                "id": str(m["id"]),
                "name": str(m.get("name") or m["id"]),
                "object": "model",
                "owned_by": m.get("owned_by", "openai"),
            }
            for m in data
            if isinstance(m, dict) and m.get("id")
        ]
        return self.known_models

    async def stream(self, model: str, messages: list[dict[str, Any]], call: Caller) -> AsyncIterator[Event]:
        body = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        usage: Any = None
        try:
            async with self.client.stream("POST", "/chat/completions", json=body) as r:
                if r.status_code >= 400:
                    detail = _error_text(await r.aread())
                    text = f"The model server at {self.host} refused the request ({r.status_code})"
                    raise ChatwireError(ErrorCode.UNAVAILABLE, f"{text}: {detail}" if detail else f"{text}.")
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    chunk = line[5:].strip()
                    if chunk == "[DONE]":
                        break
                    try:
                        item = orjson.loads(chunk)
                    except orjson.JSONDecodeError:
                        continue
                    if not isinstance(item, dict):
                        continue
                    if item.get("usage"):
                        usage = item["usage"]
                    for choice in item.get("choices") or []:
                        delta = choice.get("delta") if isinstance(choice, dict) else None
                        piece = delta.get("content") if isinstance(delta, dict) else None
                        if isinstance(piece, str) and piece:
                            yield _delta(piece)
        except (httpx.HTTPError, ChatwireError) as exc:
            raise self.failure(exc) from exc
        yield {"type": "chat:completion", "data": {"done": True, **({"usage": usage} if usage else {})}}

    async def close(self) -> None:
        await self.client.aclose()
