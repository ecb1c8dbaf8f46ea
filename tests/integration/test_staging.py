"""Data between tasks: sandboxes, InputFile/OutputFile, implicit data, capture_stdio."""

import asyncio
import http.server
import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from plait import InputFile, LocalExecutionBackend, OutputFile, StagedFile, WorkflowEngine
from plait.errors import (
    CommandError,
    DependencyFailureError,
    FileClashError,
    InputFileError,
    InvalidTaskError,
    OutputFileMissingError,
)


async def test_chain_of_three_executables_hands_files_along(flow, tmp_path):
    @flow.executable_task
    async def make(out):
        return f"seq 1 5 > {out.filename}"

    @flow.executable_task
    async def square(dep, inp, out):
        return f"awk '{{ print $1 * $1 }}' {inp.filename} > {out.filename}"

    @flow.executable_task
    async def total(dep, inp):
        return f"awk '{{ s += $1 }} END {{ print s }}' {inp.filename}"

    first = make(OutputFile("numbers.txt"))
    second = square(first, InputFile("numbers.txt"), OutputFile("squares.txt"))
    third = total(second, InputFile("squares.txt"))
    assert await third == "55\n"
    root = tmp_path / flow.uid
    assert (root / first.uid / "numbers.txt").read_text().split() == ["1", "2", "3", "4", "5"]
    staged = root / third.uid / "squares.txt"
    assert staged.is_symlink()
    assert staged.resolve() == (root / second.uid / "squares.txt").resolve()
    assert third.task.inputs == ("squares.txt",)
    assert second.task.outputs == ("squares.txt",)


async def test_fan_in_of_twenty_producers_into_one_consumer(flow):
    @flow.executable_task
    async def produce(i, out):
        return f"echo {i} > {out}"

    @flow.function_task
    def consume(*paths, after):
        return sum(int(Path(p).read_text()) for p in paths)

    producers = [produce(i, OutputFile(f"part{i}.txt")) for i in range(20)]
    inputs = [InputFile(f"part{i}.txt") for i in range(20)]
    assert await consume(*inputs, after=producers) == sum(range(20))


async def test_functions_get_sandbox_paths_and_the_process_cwd_is_untouched(flow, tmp_path):
    cwd = os.getcwd()

    @flow.function_task
    def write(out):
        assert isinstance(out, StagedFile) and os.getcwd() == cwd
        Path(out).write_text("from a function")
        return out.filename

    @flow.function_task
    async def read(dep, inp):
        return Path(inp).read_text()

    producer = write(OutputFile("note.txt"))
    assert await read(producer, InputFile("note.txt")) == "from a function"
    assert await producer == "note.txt"
    assert os.getcwd() == cwd


async def test_missing_output_fails_with_the_file_and_sandbox_named(flow, tmp_path):
    @flow.executable_task
    async def forgetful(out):
        return "true"

    @flow.function_task
    async def after(x):
        return x

    fut = forgetful(OutputFile("expected.dat"))
    downstream = after(fut)
    with pytest.raises(OutputFileMissingError) as info:
        await fut
    assert "expected.dat" in str(info.value)
    assert str(tmp_path / flow.uid / fut.uid) in str(info.value)
    with pytest.raises(DependencyFailureError):
        await downstream


async def test_missing_input_fails_before_the_task_runs(flow, tmp_path):
    ran = tmp_path / "ran"

    @flow.executable_task
    async def consumer(inp):
        return f"touch {ran}"

    with pytest.raises(InputFileError, match=r"'nowhere\.csv'.*not an output of any dependency"):
        await consumer(InputFile("nowhere.csv"))
    assert not ran.exists()


async def test_existing_local_path_is_linked_in(flow, tmp_path):
    data = tmp_path / "data" / "input.csv"
    data.parent.mkdir()
    data.write_text("a,b\n1,2\n")

    @flow.executable_task
    async def count(inp):
        return f"wc -l < {inp.filename}"

    fut = count(InputFile(str(data)))
    assert (await fut).strip() == "2"
    linked = Path(fut.task.sandbox) / "input.csv"
    assert linked.is_symlink() and linked.resolve() == data.resolve()


async def test_backend_without_shared_filesystem_gets_copies(tmp_path):
    class Remote(LocalExecutionBackend):
        shares_filesystem = False

    flow = await WorkflowEngine.create(
        backend=Remote(), work_dir=str(tmp_path), handle_signals=False
    )
    src = tmp_path / "in.txt"
    src.write_text("payload")

    @flow.executable_task
    async def show(inp):
        return f"cat {inp.filename}"

    fut = show(InputFile(str(src)))
    assert await fut == "payload"
    copied = Path(fut.task.sandbox) / "in.txt"
    assert copied.exists() and not copied.is_symlink()
    await flow.shutdown()


class SlowHandler(http.server.BaseHTTPRequestHandler):
    body = b"x" * 200_000

    def do_GET(self):
        if self.path == "/missing":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        half = len(self.body) // 2
        self.wfile.write(self.body[:half])
        self.wfile.flush()
        time.sleep(1.0)  # a slow server
        self.wfile.write(self.body[half:])

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_url_input_is_fetched_without_blocking_other_tasks(flow, http_server):
    finished = {}

    @flow.function_task
    def size(inp):
        finished["download"] = time.monotonic()
        return Path(inp).stat().st_size

    @flow.function_task
    async def quick():
        await asyncio.sleep(0.1)
        finished["quick"] = time.monotonic()

    url = f"{http_server}/data/blob.bin"
    declared = InputFile(url)
    assert declared.filename == "blob.bin"  # nothing fetched at construction
    download = size(declared)
    await quick()
    assert not download.done()  # the slow download is still under way
    assert await download == len(SlowHandler.body)
    assert finished["quick"] < finished["download"]


async def test_unreachable_url_fails_the_task_clearly(flow, http_server):
    @flow.function_task
    def use(inp):
        return inp

    with pytest.raises(InputFileError, match="cannot fetch InputFile"):
        await use(InputFile(f"{http_server}/missing"))


async def test_file_url_input(flow, tmp_path):
    src = tmp_path / "local.txt"
    src.write_text("via file url")

    @flow.function_task
    def read(inp):
        return Path(inp).read_text()

    assert await read(InputFile(src.as_uri())) == "via file url"


async def test_two_dependencies_producing_one_name_is_a_clash(flow):
    @flow.executable_task
    async def produce(i, out):
        return f"echo {i} > {out}"

    @flow.function_task
    def consume(*args):
        return args

    a = produce(1, OutputFile("same.txt"))
    b = produce(2, OutputFile("same.txt"))
    with pytest.raises(FileClashError, match="more than one dependency"):
        await consume(a, b, InputFile("same.txt"))
    await asyncio.gather(a, b)
    assert a.state == b.state == "DONE"  # the producers are untouched


async def test_two_inputs_with_one_name_from_different_places_is_a_clash(flow, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "x" / "f.txt").write_text("1")
    (tmp_path / "y" / "f.txt").write_text("2")

    @flow.function_task
    def consume(*args):
        return args

    with pytest.raises(FileClashError, match=r"two different files named 'f\.txt'"):
        await consume(InputFile(str(tmp_path / "x/f.txt")), InputFile(str(tmp_path / "y/f.txt")))


@pytest.mark.parametrize("name", ["../escape.txt", "/tmp/absolute.txt", "a/../../b.txt"])
async def test_output_names_that_escape_the_sandbox_are_rejected(flow, tmp_path, name):
    @flow.executable_task
    async def writer(out):
        return f"echo x > {out}"

    with pytest.raises(InvalidTaskError, match="outside its sandbox"):
        await writer(OutputFile(name))
    assert not (tmp_path / flow.uid / "escape.txt").exists()


def test_empty_output_name_is_rejected_at_construction():
    with pytest.raises(ValueError, match="file name"):
        OutputFile("")
    with pytest.raises(ValueError, match="file name"):
        OutputFile("dir/")


async def test_implicit_data_links_files_of_dependencies_without_outputs(flow, tmp_path):
    src = tmp_path / "raw.txt"
    src.write_text("3\n1\n2\n")

    @flow.executable_task
    async def sort_it(inp):  # declares an input, so it runs in a sandbox; no outputs
        return f"sort -n {inp.filename} > sorted.txt"

    @flow.executable_task
    async def head(dep):
        return "head -n 1 sorted.txt"

    assert await head(sort_it(InputFile(str(src)))) == "1\n"


async def test_implicit_data_can_be_turned_off(tmp_path):
    flow = await WorkflowEngine.create(
        work_dir=str(tmp_path), implicit_data=False, handle_signals=False
    )
    src = tmp_path / "raw.txt"
    src.write_text("3\n1\n")

    @flow.executable_task
    async def sort_it(inp):
        return f"sort -n {inp.filename} > sorted.txt"

    @flow.executable_task
    async def head(dep):
        return "head -n 1 sorted.txt"

    assert flow.implicit_data_mode is False
    with pytest.raises(CommandError, match=r"sorted\.txt"):
        await head(sort_it(InputFile(str(src))))
    await flow.shutdown()


async def test_capture_stdio_writes_files_and_returns_the_stdout_path(flow, tmp_path):
    @flow.executable_task(capture_stdio=True)
    async def talk():
        return "echo to-out; echo to-err >&2; pwd"

    fut = talk()
    path = await fut
    root = tmp_path / flow.uid
    assert path == str(root / f"{fut.uid}.stdout")
    assert Path(path).read_text() == f"to-out\n{root / fut.uid}\n"  # ran in its sandbox
    assert (root / f"{fut.uid}.stderr").read_text() == "to-err\n"


async def test_capture_stdio_failure_carries_the_stderr_tail(flow):
    @flow.executable_task(capture_stdio=True)
    async def broken():
        return "echo bad >&2; exit 4"

    with pytest.raises(CommandError) as info:
        await broken()
    assert str(info.value) == "bad"  # the message is the tail, as the reference's
    assert info.value.stderr_tail == "bad" and info.value.exit_code == 4
    assert "exited with status 4" in info.value.__notes__[0]


async def test_capture_stdio_streams_200mb_without_holding_it_in_memory(flow):
    proc = psutil.Process()
    baseline = proc.memory_info().rss
    peak = baseline
    stop = asyncio.Event()

    async def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss)
            await asyncio.sleep(0.01)

    @flow.executable_task(capture_stdio=True)
    async def big():
        return "head -c 200000000 /dev/zero"

    sampler = asyncio.create_task(sample())
    path = await big()
    stop.set()
    await sampler
    assert os.path.getsize(path) == 200_000_000
    assert peak - baseline < 50 * 1024 * 1024


async def test_dry_run_does_not_stage_or_check_files(tmp_path):
    flow = await WorkflowEngine.create(dry_run=True, work_dir=str(tmp_path), handle_signals=False)

    @flow.executable_task
    async def needs(inp, out):
        return "true"

    assert await needs(InputFile("nowhere"), OutputFile("never.txt")) == "Dummy Output"
    assert not (tmp_path / flow.uid).exists()
    await flow.shutdown()
