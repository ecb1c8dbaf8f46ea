"""Prompt tasks against any OpenAI-compatible model server (vLLM, llama.cpp, Ollama, OpenAI).

Built on the official ``openai`` SDK (``pip install 'plait[llm]'``), imported when the
backend starts. The SDK does the HTTP, the timeouts and the retries: a 429 or 5xx
answer is retried with exponential backoff, honouring ``Retry-After``, up to
``max_retries`` times. On top of it this backend adds:

* a concurrency limit (``max_concurrency`` requests in flight);
* rate limits (``requests_per_minute``, ``tokens_per_minute``) with aiolimiter's leaky
  bucket; tokens are estimated before sending (four characters a token, plus the
  reply's ``max_tokens``);
* per-task options: ``model``, ``system``, ``temperature``, ``max_tokens``,
  ``response_format="json"`` (the reply is parsed; invalid JSON fails the task with
  the raw reply in the error);
* the reply's details on the task (``fut.task["usage"]``, ``["model"]``,
  ``["finish_reason"]``, ``["latency_s"]``) and in telemetry (``gen_ai.*`` attributes);
* prompts sent to a model server started in the same workflow (a service task): give
  the backend ``base_url=`` that service (its future or its ``Service``; it may be set
  after the engine is made, ``backend.base_url = svc``), or give a prompt task
  ``service=svc``. The requests go to the service's ``url`` + ``/v1``.

Each task sends one request (retries of a failed request aside) and gets at most one
reply: no prompt is lost, none is answered twice into the workflow.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import time
from typing import Any, ClassVar

from plait.backends.base import ExecutionBackend
from plait.errors import (
    BackendError,
    InvalidTaskError,
    MissingDependencyError,
    ReplyFormatError,
    TaskTimeoutError,
)
from plait.services.handle import service_of
from plait.task import TaskDescription, TaskKind

__all__ = ["OpenAIInferenceBackend"]

CHARS_PER_TOKEN = 4
RATE_PERIOD = 60.0
"""Seconds over which ``requests_per_minute`` and ``tokens_per_minute`` are counted."""


class OpenAIInferenceBackend(ExecutionBackend):
    """Run prompt tasks on an OpenAI-compatible chat completions endpoint.

    Args:
        model: the default model (a task's ``model=`` overrides it).
        base_url: the server, e.g. ``http://127.0.0.1:8000/v1``; OpenAI's when None; or a
            service task's future or ``Service`` (see the module docstring).
        api_key: the key; ``OPENAI_API_KEY`` when None; a local server needs none.
        name: the backend's name (``prompt_task(backend=...)``).
        max_concurrency: requests in flight at once.
        requests_per_minute: a request rate limit, or None.
        tokens_per_minute: a token rate limit (estimated before sending), or None.
        timeout: seconds to wait for one reply before the task fails.
        max_retries: retries of a request answered 429, 5xx, or not at all.
        system: the system message of tasks that set none.
        temperature: the temperature of tasks that set none.
        max_tokens: the reply's most tokens, for tasks that set none.
        client: an ``openai.AsyncOpenAI`` to use instead of making one.
    """

    kinds: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.PROMPT})
    rate_period: ClassVar[float] = RATE_PERIOD

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: Any = None,
        api_key: str | None = None,
        name: str = "llm",
        max_concurrency: int = 64,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        timeout: float = 600.0,
        max_retries: int = 3,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        client: Any = None,
    ) -> None:
        super().__init__(name)
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.model = model
        self.base_url = base_url
        self._api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.defaults = {"system": system, "temperature": temperature, "max_tokens": max_tokens}
        self._client = client
        self._owns_client = client is None
        self._clients: dict[str, Any] = {}  # one per service URL
        self._slots = asyncio.Semaphore(max_concurrency)
        self._rpm = requests_per_minute
        self._tpm = tokens_per_minute
        self._request_limiter: Any = None
        self._token_limiter: Any = None

    async def start(self) -> None:
        """Make the SDK client and the rate limiters."""
        if importlib.util.find_spec("openai") is None:
            raise MissingDependencyError("OpenAIInferenceBackend", "llm", "openai")
        if self._rpm or self._tpm:
            try:
                from aiolimiter import AsyncLimiter
            except ImportError as exc:
                raise MissingDependencyError("rate limits", "llm", "aiolimiter") from exc
            if self._rpm:
                self._request_limiter = AsyncLimiter(self._rpm, self.rate_period)
            if self._tpm:
                self._token_limiter = AsyncLimiter(self._tpm, self.rate_period)
        if self._client is None and (self.base_url is None or isinstance(self.base_url, str)):
            self._client = self._new_client(self.base_url)

    def _new_client(self, base_url: str | None) -> Any:
        import openai

        return openai.AsyncOpenAI(
            base_url=base_url,
            api_key=self._api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
            timeout=self.timeout,
            max_retries=self.max_retries,
        )

    async def _client_for(self, task: TaskDescription) -> Any:
        """The client for ``task``: its service's, the backend's service's, or the default."""
        target = task.options.service
        if target is True or target is False:
            target = self.base_url
            if target is None or isinstance(target, str):
                return self._client
        if isinstance(target, asyncio.Future):
            target = await target  # a service of this workflow, still starting
        service = service_of(target)
        if service is None or service.url is None:
            raise InvalidTaskError(
                f"prompt task {task.name!r} ({task.uid}) is sent to {target!r}, which is not "
                "a service with a URL (a service task whose ready= probe names its port)",
                task_uid=task.uid,
                task_name=task.name,
            )
        await service.available()
        url = f"{service.url}/v1"
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = self._new_client(url)
        return client

    def _request(self, task: TaskDescription) -> dict[str, Any]:
        opts = task.options
        model = opts.model or self.model
        if not model:
            raise InvalidTaskError(
                f"prompt task {task.name!r} ({task.uid}) names no model: pass model= to the "
                f"task or to backend {self.name!r}"
            )
        system = opts.system if opts.system is not None else self.defaults["system"]
        prompt = task.prompt
        messages = (
            [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        )
        if system and not (messages and messages[0].get("role") == "system"):
            messages.insert(0, {"role": "system", "content": system})
        request: dict[str, Any] = {"model": model, "messages": messages}
        temperature = (
            opts.temperature if opts.temperature is not None else self.defaults["temperature"]
        )
        if temperature is not None:
            request["temperature"] = temperature
        max_tokens = opts.max_tokens if opts.max_tokens is not None else self.defaults["max_tokens"]
        if max_tokens is not None:
            request["max_tokens"] = max_tokens
        if opts.response_format == "json":
            request["response_format"] = {"type": "json_object"}
        return request

    async def _limit(self, request: dict[str, Any]) -> None:
        if self._request_limiter is not None:
            await self._request_limiter.acquire()
        if self._token_limiter is not None:
            chars = sum(len(str(m.get("content", ""))) for m in request["messages"])
            wanted = chars / CHARS_PER_TOKEN + request.get("max_tokens", 0)
            await self._token_limiter.acquire(min(wanted, self._token_limiter.max_rate))

    async def run(self, task: TaskDescription) -> Any:
        """Send the task's prompt; return the reply's text (parsed, for JSON)."""
        import openai

        request = self._request(task)
        client = await self._client_for(task)
        async with self._slots:
            await self._limit(request)
            started = time.perf_counter()
            try:
                response = await client.chat.completions.create(**request)
            except openai.APITimeoutError as exc:
                raise TaskTimeoutError(
                    f"prompt task {task.name!r} ({task.uid}) got no reply from {self.name!r} "
                    f"within {self.timeout}s (after {self.max_retries} retries)",
                    task_uid=task.uid,
                    task_name=task.name,
                ) from exc
            except openai.APIError as exc:
                status = getattr(exc, "status_code", None)
                raise BackendError(
                    f"prompt task {task.name!r} ({task.uid}): model server {self.name!r} "
                    f"answered {status or 'with an error'}: {exc}",
                    task_uid=task.uid,
                    task_name=task.name,
                ) from exc
            latency = time.perf_counter() - started
        return self._reply(task, request, response, latency)

    @staticmethod
    def _reply(
        task: TaskDescription, request: dict[str, Any], response: Any, latency: float
    ) -> Any:
        choice = response.choices[0]
        text = choice.message.content or ""
        usage = response.usage
        task.extra = {
            "model": response.model or request["model"],
            "request_model": request["model"],
            "finish_reason": choice.finish_reason,
            "latency_s": latency,
            "usage": {
                "input_tokens": getattr(usage, "prompt_tokens", None),
                "output_tokens": getattr(usage, "completion_tokens", None),
                "total_tokens": getattr(usage, "total_tokens", None),
            },
        }
        if task.options.response_format != "json":
            return text
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReplyFormatError(
                f"prompt task {task.name!r} ({task.uid}) asked for JSON but the reply is not "
                f"JSON ({exc}); the reply was: {text[:2000]!r}",
                text,
                task_uid=task.uid,
                task_name=task.name,
            ) from exc

    async def shutdown(self) -> None:
        """Close the SDK clients (unless one was passed in)."""
        if self._owns_client and self._client is not None:
            await self._client.close()
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
