"""The run journal: a re-run skips every task that already succeeded, even after a kill."""

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from plait import WorkflowEngine
from plait.telemetry import EventKind


async def run_once(tmp_path, log, *, scale=2, journal=True):
    flow = await WorkflowEngine.create(
        work_dir=str(tmp_path),
        handle_signals=False,
        journal=str(tmp_path / "run.db") if journal else None,
    )
    cached = []
    flow.subscribe(lambda e: cached.append(e.name) if e.kind is EventKind.CACHED else None)

    @flow.function_task
    def square(x):
        with open(log, "a") as f:
            f.write(f"square {x}\n")
        return x * x

    @flow.executable_task
    async def shout(value):
        return f"echo shout {value} >> {log}; echo {value * scale}"

    @flow.function_task(cache=False)
    def always(x):
        with open(log, "a") as f:
            f.write("always\n")
        return x

    results = await asyncio.gather(*(shout(square(i)) for i in range(3)), always(1))
    await flow.shutdown()
    return results, cached


async def test_a_rerun_skips_every_task_that_already_succeeded(tmp_path):
    log = tmp_path / "log"
    first, cached = await run_once(tmp_path, log)
    assert first == ["0\n", "2\n", "8\n", 1] and cached == []
    ran_first = log.read_text().splitlines()
    assert len(ran_first) == 7  # 3 squares, 3 shouts, always
    second, cached = await run_once(tmp_path, log)
    assert second == first
    assert log.read_text().splitlines()[7:] == ["always"]  # only the uncached one ran
    assert sorted(cached) == ["shout"] * 3 + ["square"] * 3


async def test_changed_inputs_run_again(tmp_path):
    log = tmp_path / "log"
    await run_once(tmp_path, log)
    before = len(log.read_text().splitlines())
    results, cached = await run_once(tmp_path, log, scale=3)  # shout closes over scale
    assert results[:3] == ["0\n", "3\n", "12\n"]
    assert sorted(cached) == ["square"] * 3  # the squares were kept; every shout ran again
    assert len(log.read_text().splitlines()) == before + 4  # 3 shouts and always


async def test_a_function_closing_over_a_changed_value_runs_again(tmp_path):
    ran = str(tmp_path / "ran")

    def define(flow, factor):
        @flow.function_task
        def scaled(x):
            with open(ran, "a") as f:
                f.write(f"{factor}\n")
            return x * factor

        return scaled

    for factor in (2, 2, 3):
        flow = await WorkflowEngine.create(
            work_dir=str(tmp_path), handle_signals=False, journal=str(tmp_path / "c.db")
        )
        assert await define(flow, factor)(5) == 5 * factor
        await flow.shutdown()
    # the second run reused the first; the third, with another factor, ran again
    assert (tmp_path / "ran").read_text().split() == ["2", "3"]


async def test_without_a_journal_everything_runs(tmp_path):
    log = tmp_path / "log"
    await run_once(tmp_path, log, journal=False)
    await run_once(tmp_path, log, journal=False)
    assert len(log.read_text().splitlines()) == 14


async def test_unpicklable_results_are_not_journaled_and_run_again(tmp_path):
    for _ in range(2):
        flow = await WorkflowEngine.create(
            work_dir=str(tmp_path), handle_signals=False, journal=str(tmp_path / "j.db")
        )

        @flow.function_task
        def lock():
            return threading.Lock()  # cannot be pickled

        assert isinstance(await lock(), type(threading.Lock()))
        assert len(flow.journal) == 0 and flow.journal.hits == 0
        await flow.shutdown()


SCRIPT = """
import asyncio, sys, time
from plait import WorkflowEngine

async def main(log, slow):
    flow = await WorkflowEngine.create(journal=sys.argv[3])

    @flow.function_task
    def step(name, seconds, after=None):
        time.sleep(seconds)
        with open(log, "a") as f:
            f.write(name + "\\n")
        return name

    a = step("a", 0)
    b = step("b", 0, after=a)
    c = step("c", slow, after=b)
    print(await c, flush=True)
    await flow.shutdown()

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


def test_a_killed_run_loses_no_finished_result(tmp_path):
    log, journal = tmp_path / "log", tmp_path / "kill.db"
    script = tmp_path / "flow.py"
    script.write_text(SCRIPT)
    first = subprocess.Popen([sys.executable, str(script), str(log), "60", str(journal)])
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and "b" in log.read_text().split()):
            assert time.monotonic() < deadline, "b never finished"
            time.sleep(0.05)
        time.sleep(0.2)  # c is running now
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert log.read_text().split() == ["a", "b"]
    again = subprocess.run(
        [sys.executable, str(script), str(log), "0", str(journal)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "c"
    assert log.read_text().split() == ["a", "b", "c"]  # a and b were not run again


def test_the_cache_option_is_checked():
    from plait.errors import InvalidTaskError
    from plait.task import TaskOptions, make_options

    with pytest.raises(InvalidTaskError, match="'cache' must be bool"):
        make_options(TaskOptions(), {"cache": "yes"})


async def test_a_journal_hit_has_its_own_event_sequence(tmp_path):
    sequences = []
    for _ in range(2):
        flow = await WorkflowEngine.create(
            work_dir=str(tmp_path), handle_signals=False, journal=str(tmp_path / "e.db")
        )
        events = []
        flow.subscribe(events.append)

        @flow.function_task
        def work():
            return 42

        assert await work() == 42
        await flow.shutdown()
        sequences.append([e.kind.value for e in events])
    assert sequences[0] == ["created", "resolved", "queued", "submitted", "started", "completed"]
    assert sequences[1] == ["created", "resolved", "queued", "cached", "completed"]


# -- a journal refuses files that are not its own ------------------------------------


def _foreign_database(path):
    import sqlite3

    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE results (key TEXT PRIMARY KEY, value BLOB)")
        db.execute("INSERT INTO results VALUES ('k', x'00')")
    db.close()


def _damaged_journal(path):
    from plait.journal import Journal

    Journal(path).close()
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\xff" * 400 + data[500:])  # a page header overwritten


def _future_journal(path):
    import sqlite3

    from plait.journal import Journal

    Journal(path).close()
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE plait_journal SET value = '99' WHERE name = 'version'")
    db.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b"not a database at all, just text\n" * 40), "not a SQLite"),
        (_foreign_database, r"something else \(tables: results\)"),
        (_damaged_journal, "damaged or unreadable"),
        (_future_journal, "format version 99"),
    ],
    ids=["directory", "not-sqlite", "foreign-sqlite", "damaged", "future-version"],
)
async def test_a_file_that_is_not_a_usable_journal_is_refused_and_left_as_it_was(
    tmp_path, make, message
):
    from plait.errors import JournalError

    path = tmp_path / "run.db"
    make(path)
    before = sorted(p.name for p in tmp_path.iterdir())
    content = path.read_bytes() if path.is_file() else None
    with pytest.raises(JournalError, match=message) as info:
        await WorkflowEngine.create(work_dir=str(tmp_path), journal=str(path))
    assert str(path) in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no -wal, no -shm
    if content is not None:
        assert path.read_bytes() == content


@pytest.mark.parametrize("wal", [False, True], ids=["plain", "wal"])
async def test_a_database_with_nothing_in_it_becomes_a_journal(tmp_path, wal):
    # What a run killed while it made its journal leaves: SQLite's header, no table.
    import sqlite3

    path = tmp_path / "run.db"
    db = sqlite3.connect(path)
    if wal:
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    db.execute("DROP TABLE t")  # the file now has SQLite's header and an empty schema
    db.close()
    assert path.read_bytes().startswith(b"SQLite format 3\x00")

    async def run():
        flow = await WorkflowEngine.create(work_dir=str(tmp_path), journal=str(path))
        calls = []

        @flow.function_task
        async def double(x):
            calls.append(x)
            return 2 * x

        assert await double(21) == 42
        await flow.shutdown()
        return calls

    assert await run() == [21]
    assert await run() == []  # journaled: the file works as a journal


def test_plait_run_refuses_a_bad_journal_before_the_script_starts(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("print('ran')\n")
    other = tmp_path / "other.db"
    _foreign_database(other)
    done = subprocess.run(
        [sys.executable, "-m", "plait.cli", "run", "--journal", str(other), str(script)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "not a plait journal" in done.stderr and "ran" not in done.stdout


async def test_failures_are_noted_and_run_again(tmp_path):
    from plait.journal import Store

    tries = tmp_path / "tries"
    for _ in range(2):
        flow = await WorkflowEngine.create(
            work_dir=str(tmp_path), handle_signals=False, journal=str(tmp_path / "f.db")
        )

        @flow.function_task
        def flaky(log):
            with open(log, "a") as f:
                f.write("try\n")
            raise ValueError("not today")

        with pytest.raises(ValueError):
            await flaky(str(tries))
        await flow.shutdown()
    assert len(tries.read_text().split()) == 2  # a failure is not a result to reuse
    (entry,) = Store(tmp_path / "f.db").entries()
    assert (entry.name, entry.state, entry.error) == ("flaky", "FAILED", "ValueError: not today")
    assert entry.duration is not None and entry.duration >= 0


# -- keys that do not move with the code around a task ----------------------------------

KEYED = """
import asyncio, sys
from plait import WorkflowEngine

def helper(x):
    return [v * 2 for v in range(x)]   # a comprehension: a nested code object

async def main(log):
    flow = await WorkflowEngine.create(journal=sys.argv[2])
    scale = {"by": 3}

    @flow.function_task
    def work(n):
        with open(log, "a") as f:
            f.write(f"work {n}\\n")
        square = lambda v: v * v * scale["by"]     # a lambda: another one
        return sum(square(v) for v in helper(n))   # a generator: and another

    print(await asyncio.gather(*(work(n) for n in range(3))))
    await flow.shutdown()

asyncio.run(main(sys.argv[1]))
"""


def _run_script(path, log, journal):
    done = subprocess.run(
        [sys.executable, str(path), str(log), str(journal)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_lines_added_above_a_task_or_a_moved_script_do_not_make_it_run_again(tmp_path):
    log, journal = tmp_path / "log", tmp_path / "keys.db"
    first = tmp_path / "flow.py"
    first.write_text(KEYED)
    out = _run_script(first, log, journal)
    assert len(log.read_text().splitlines()) == 3
    # Lines added above everything, and the script moved and renamed.
    moved = tmp_path / "elsewhere" / "renamed.py"
    moved.parent.mkdir()
    moved.write_text("# a comment\n\n\nimport os  # and an import\n" + KEYED)
    assert _run_script(moved, log, journal) == out
    assert len(log.read_text().splitlines()) == 3  # nothing ran again
    # A real change in the code (the lambda) does run it again.
    moved.write_text(KEYED.replace("v * v * scale", "v * v * v * scale"))
    assert _run_script(moved, log, journal) != out
    assert len(log.read_text().splitlines()) == 6
