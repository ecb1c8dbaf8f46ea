"""Builders and blocks see values, whatever backend made their inputs (issue: Dask futures
leaked into commands: ``echo n=<Future: finished, type: int, key: square-task...>``).

A matrix: each kind of consumer (an executable on Dask and on the local backend, a
prompt against a real HTTP model server, a block, a function on each backend) takes
each kind of input (a function and an executable that ran on a Dask LocalCluster, a
local function, a prompt), bare and nested in a list, and must see its value.
"""

import sys

import cloudpickle
import pytest
import pytest_asyncio

from plait import InputFile, LocalExecutionBackend, OutputFile, WorkflowEngine
from plait.backends.dask import DaskExecutionBackend
from plait.backends.llm import OpenAIInferenceBackend
from plait.testing import OpenAIStubServer

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def model_server():
    with OpenAIStubServer() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def flow(tmp_path_factory, model_server):
    dask = await DaskExecutionBackend(n_workers=1, threads_per_worker=2)
    llm = OpenAIInferenceBackend("stub-model", base_url=model_server.url, name="llm")
    engine = await WorkflowEngine.create(
        backend=[dask, LocalExecutionBackend(name="local"), llm],
        work_dir=str(tmp_path_factory.mktemp("builders")),
        handle_signals=False,
    )
    yield engine
    await engine.shutdown()


def producers(flow):
    """Each kind of input, and the text its value shows in a consumer's output."""

    @flow.function_task(backend="dask")
    def square_on_dask(x):
        return x * x

    @flow.executable_task(backend="dask")
    async def echo_on_dask(x):
        return f"printf {x * x}"

    @flow.function_task(backend="local")
    async def square_here(x):
        return x * x

    @flow.prompt_task(backend="llm")
    async def ask(x):
        return f"square {x}"

    return {
        "dask-function": (lambda: square_on_dask(4), "16"),
        "dask-executable": (lambda: echo_on_dask(4), "16"),
        "local-function": (lambda: square_here(4), "16"),
        "prompt": (lambda: ask(4), "reply to: square 4"),
    }


def consumers(flow):
    @flow.executable_task(backend="dask")
    async def command_on_dask(value, wrapped):
        return f"printf '%s|%s' '{value}' '{wrapped[0]}'"

    @flow.executable_task(backend="local")
    async def command_here(value, wrapped):
        return f"printf '%s|%s' '{value}' '{wrapped[0]}'"

    @flow.prompt_task(backend="llm")
    async def prompt(value, wrapped):
        return f"{value}|{wrapped[0]}"

    @flow.block
    async def block(value, wrapped):
        return f"{value}|{wrapped[0]}"

    @flow.function_task(backend="dask")
    def function_on_dask(value, wrapped):
        return f"{value}|{wrapped[0]}"

    @flow.function_task(backend="local")
    def function_here(value, wrapped):
        return f"{value}|{wrapped[0]}"

    return {
        "executable-on-dask": (command_on_dask, ""),
        "executable-here": (command_here, ""),
        "prompt": (prompt, "reply to: "),
        "block": (block, ""),
        "function-on-dask": (function_on_dask, ""),
        "function-here": (function_here, ""),
    }


UPSTREAM = ["dask-function", "dask-executable", "local-function", "prompt"]
DOWNSTREAM = [
    "executable-on-dask",
    "executable-here",
    "prompt",
    "block",
    "function-on-dask",
    "function-here",
]


@pytest.mark.parametrize("upstream", UPSTREAM)
@pytest.mark.parametrize("downstream", DOWNSTREAM)
async def test_a_consumer_sees_the_value_of_its_input(flow, upstream, downstream):
    make, shown = producers(flow)[upstream]
    consume, prefix = consumers(flow)[downstream]
    first = make()
    await first  # finished (and, on Dask, kept there) before the consumer is called
    second = make()  # still running when the consumer is called
    result = await consume(first, [second])
    assert "Future" not in result
    assert result == f"{prefix}{shown}|{shown}"


async def test_a_file_made_on_dask_is_staged_for_a_local_function(flow):
    @flow.executable_task(backend="dask")
    async def produce(n, out):
        return f"seq {n} > {out.filename}"

    @flow.function_task(backend="local")
    def count(path, after):
        with open(path) as f:
            return len(f.read().split())

    made = produce(5, OutputFile("numbers.txt"))
    assert await count(InputFile("numbers.txt"), after=made) == 5
