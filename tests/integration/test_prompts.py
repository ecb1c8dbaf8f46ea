"""Prompt tasks through the real openai SDK, over real HTTP, against a stub server on 127.0.0.1."""

import asyncio
import time
from typing import ClassVar

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from plait import LocalExecutionBackend, NoopExecutionBackend, WorkflowEngine
from plait.backends.llm import OpenAIInferenceBackend
from plait.errors import (
    BackendError,
    DependencyFailureError,
    InvalidTaskError,
    ReplyFormatError,
    TaskTimeoutError,
    UnsupportedTaskError,
)
from plait.testing import OpenAIStubServer


@pytest.fixture
def server():
    with OpenAIStubServer() as stub:
        yield stub


async def make_flow(server, tmp_path, **options):
    llm = OpenAIInferenceBackend("stub-model", base_url=server.url, **options)
    flow = await WorkflowEngine.create(
        backend=[LocalExecutionBackend(), await llm], work_dir=str(tmp_path), handle_signals=False
    )
    return flow


async def test_prompts_run_in_parallel_and_reply_text_is_the_result(server, tmp_path):
    flow = await make_flow(server, tmp_path)

    @flow.prompt_task(backend="llm")
    async def ask(i):
        return f"question {i} [delay=0.3]"

    started = time.monotonic()
    replies = await asyncio.gather(*(ask(i) for i in range(10)))
    assert replies == [f"reply to: question {i} [delay=0.3]" for i in range(10)]
    assert time.monotonic() - started < 2.0  # 10 x 0.3 s one after another would be 3 s
    assert server.max_in_flight > 1
    await flow.shutdown()


async def test_concurrency_limit_is_respected(server, tmp_path):
    flow = await make_flow(server, tmp_path, max_concurrency=3)

    @flow.prompt_task
    async def ask(i):
        return f"q{i} [delay=0.1]"

    await asyncio.gather(*(ask(i) for i in range(12)))
    assert server.requests == 12 and server.max_in_flight == 3
    await flow.shutdown()


async def test_429_with_retry_after_and_500_are_retried(server, tmp_path):
    flow = await make_flow(server, tmp_path, max_retries=3)

    @flow.prompt_task
    async def ask(text):
        return text

    started = time.monotonic()
    throttled = "busy [429x1] [retry_after=1]"
    assert await ask(throttled) == f"reply to: {throttled}"
    assert time.monotonic() - started >= 1.0  # Retry-After honoured
    assert server.asked[throttled] == 2  # answered once into the workflow
    flaky = "flaky [500x2]"
    assert await ask(flaky) == f"reply to: {flaky}"
    assert server.asked[flaky] == 3
    await flow.shutdown()


async def test_errors_that_outlast_the_retries_fail_the_task(server, tmp_path):
    flow = await make_flow(server, tmp_path, max_retries=1)

    @flow.prompt_task
    async def ask():
        return "down [500x5]"

    with pytest.raises(BackendError, match="answered 500"):
        await ask()
    await flow.shutdown()


async def test_a_reply_that_never_comes_fails_after_the_timeout(server, tmp_path):
    flow = await make_flow(server, tmp_path, timeout=0.3, max_retries=0)

    @flow.prompt_task
    async def slow():
        return "think hard [delay=3]"

    started = time.monotonic()
    with pytest.raises(TaskTimeoutError, match="no reply"):
        await slow()
    assert time.monotonic() - started < 2.5
    await flow.shutdown()


async def test_json_mode_parses_the_reply_and_rejects_invalid_json(server, tmp_path):
    flow = await make_flow(server, tmp_path)

    @flow.prompt_task(response_format="json")
    async def structured(text):
        return text

    assert await structured("give json [json]") == {"echo": "give json [json]"}
    with pytest.raises(ReplyFormatError) as info:
        await structured("oops [badjson]")
    assert info.value.reply == "this is {not json"
    assert "this is {not json" in str(info.value)
    await flow.shutdown()


async def test_chat_messages_system_and_per_call_options(server, tmp_path):
    flow = await make_flow(server, tmp_path, system="be brief")
    sent = []
    real = flow.backends["llm"]._request

    def spy(task):
        request = real(task)
        sent.append(request)
        return request

    flow.backends["llm"]._request = spy

    @flow.prompt_task
    async def chat(topic):
        return [
            {"role": "user", "content": f"tell me about {topic}"},
            {"role": "assistant", "content": "sure"},
            {"role": "user", "content": "go on"},
        ]

    assert await chat("cells", model="other-model", temperature=0.2, max_tokens=50) == (
        "reply to: go on"
    )
    request = sent[0]
    assert request["model"] == "other-model"
    assert request["temperature"] == 0.2 and request["max_tokens"] == 50
    assert request["messages"][0] == {"role": "system", "content": "be brief"}
    assert len(request["messages"]) == 4
    await flow.shutdown()


async def test_prompt_built_from_upstream_results_and_reply_details(server, tmp_path):
    flow = await make_flow(server, tmp_path)

    @flow.executable_task
    async def measure():
        return "echo 42"

    @flow.function_task
    def describe(value):
        return {"value": int(value)}

    @flow.prompt_task
    async def summarize(data):
        return f"summarize value {data['value']}"

    fut = summarize(describe(measure()))
    assert await fut == "reply to: summarize value 42"
    assert fut.task["model"] == "stub-model" and fut.task["finish_reason"] == "stop"
    assert fut.task["usage"] == {"input_tokens": 3, "output_tokens": 5, "total_tokens": 8}
    assert fut.task["latency_s"] > 0
    await flow.shutdown()


async def test_failed_prompt_fails_its_dependents(server, tmp_path):
    flow = await make_flow(server, tmp_path, max_retries=0)

    @flow.prompt_task
    async def ask():
        return "[500x9]"

    @flow.function_task
    async def use(reply):
        return reply

    with pytest.raises(DependencyFailureError) as info:
        await use(ask())
    assert isinstance(info.value.root_cause, BackendError)
    await flow.shutdown()


@pytest.mark.parametrize("bad", ["", "   ", 7, [{"content": "no role"}], None])
async def test_a_builder_that_returns_no_prompt_fails_its_task(server, tmp_path, bad):
    flow = await make_flow(server, tmp_path)

    @flow.prompt_task
    async def ask():
        return bad

    with pytest.raises(InvalidTaskError, match="must return a non-empty string"):
        await ask()
    assert server.requests == 0
    await flow.shutdown()


async def test_routing_prompts_to_the_backend_that_can(server, tmp_path):
    flow = await make_flow(server, tmp_path)

    @flow.prompt_task  # no backend named: the LLM backend is found
    async def found():
        return "hi"

    @flow.prompt_task(backend="default")  # explicitly the local backend: refused clearly
    async def misrouted():
        return "hi"

    assert await found() == "reply to: hi"
    with pytest.raises(UnsupportedTaskError, match="backends that can: 'llm'"):
        await misrouted()
    await flow.shutdown()


async def test_dry_run_answers_prompts_with_a_dummy(tmp_path):
    flow = await WorkflowEngine.create(backend=NoopExecutionBackend(), handle_signals=False)

    @flow.prompt_task
    async def ask():
        return "hi"

    assert await ask() == "Dummy Prompt Output"
    await flow.shutdown()


async def test_a_task_without_a_model_is_refused_before_sending(server, tmp_path):
    llm = await OpenAIInferenceBackend(base_url=server.url)
    flow = await WorkflowEngine.create(backend=llm, handle_signals=False)

    @flow.prompt_task
    async def ask():
        return "hi"

    with pytest.raises(InvalidTaskError, match="names no model"):
        await ask()
    assert server.requests == 0
    await flow.shutdown()


async def test_requests_per_period_are_limited(server, tmp_path):
    class FastPeriod(OpenAIInferenceBackend):
        rate_period: ClassVar[float] = 1.0  # so that the test takes a second, not a minute

    llm = await FastPeriod("stub-model", base_url=server.url, requests_per_minute=3)
    flow = await WorkflowEngine.create(backend=llm, handle_signals=False)

    @flow.prompt_task
    async def ask(i):
        return f"q{i}"

    started = time.monotonic()
    await asyncio.gather(*(ask(i) for i in range(6)))
    assert time.monotonic() - started >= 0.9  # 3 at once, then 3 more a period later
    await flow.shutdown()


async def test_prompt_spans_carry_gen_ai_attributes(server, tmp_path):
    flow = await make_flow(server, tmp_path)
    exporter = InMemorySpanExporter()
    await flow.start_telemetry(span_processors=[SimpleSpanProcessor(exporter)])

    @flow.prompt_task
    async def ask():
        return "one two three"

    await ask()
    await flow.shutdown()
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "ask"]
    assert span.attributes["gen_ai.request.model"] == "stub-model"
    assert span.attributes["gen_ai.usage.input_tokens"] == 3
    assert span.attributes["gen_ai.usage.output_tokens"] == 5  # "reply to: one two three"
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)
