"""Resume for file workflows: a run killed midway, re-run, and outputs that go missing."""

import os
import signal
import subprocess
import sys
import time

from plait.journal import Store

PIPELINE = """
import asyncio, os, sys
from plait import InputFile, OutputFile, WorkflowEngine

async def main(log, gate, journal):
    flow = await WorkflowEngine.create(journal=journal)

    @flow.executable_task
    async def seed(i, out):
        return f"echo seed.{i} >> {log}; echo seed-{i} > {out}"

    @flow.function_task
    async def step(i, k, src, out, gate, after):
        with open(log, "a") as f:
            f.write(f"step.{i}.{k}\\n")
        while k == 3 and not os.path.exists(gate):  # the first run is killed here
            await asyncio.sleep(0.05)
        with open(src) as f:
            text = f.read().strip()
        with open(out, "w") as f:
            f.write(f"{text} > {i}.{k}\\n")
        return k

    finals = []
    for i in range(10):  # 10 chains of 5 file-producing tasks: 50 in all
        fut = seed(i, OutputFile(f"c{i}-0.txt"))
        for k in range(1, 5):
            fut = step(i, k, InputFile(f"c{i}-{k - 1}.txt"), OutputFile(f"c{i}-{k}.txt"), gate, fut)
        finals.append(fut)
    await asyncio.gather(*finals)
    for i, fut in enumerate(finals):
        with open(os.path.join(fut.task.sandbox, f"c{i}-4.txt")) as f:
            print(f.read().strip())
    await flow.shutdown()

asyncio.run(main(*sys.argv[1:4]))
"""


def rerun(folder, log, gate, journal):
    done = subprocess.run(
        [sys.executable, str(folder / "pipeline.py"), str(log), str(gate), str(journal)],
        capture_output=True, text=True, timeout=120, cwd=folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def ran(log, since: int) -> list[str]:
    return log.read_text().split()[since:]


def plait_journal(*args) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "plait.cli", "journal", *map(str, args)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_killed_file_pipeline_resumes_and_a_lost_output_runs_again(tmp_path):
    (tmp_path / "pipeline.py").write_text(PIPELINE)
    log, gate, journal = tmp_path / "log", tmp_path / "gate", tmp_path / "run.db"
    first = subprocess.Popen(
        [sys.executable, str(tmp_path / "pipeline.py"), str(log), str(gate), str(journal)],
        cwd=tmp_path,
    )
    try:  # wait until every chain waits at its third step: the first two are recorded
        deadline = time.monotonic() + 60
        while not log.exists() or sum(w[:4] == "step" and w[-2:] == ".3" for w in ran(log, 0)) < 10:
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    entries = list(Store(journal).entries())
    assert len([e for e in entries if e.state == "DONE"]) == 30
    assert all(len(e.files) == 1 and len(e.files[0]["sha256"]) == 64 for e in entries)

    gate.touch()
    before = len(ran(log, 0))
    out = rerun(tmp_path, log, gate, journal)
    assert out == [f"seed-{i} > {i}.1 > {i}.2 > {i}.3 > {i}.4" for i in range(10)]
    again = ran(log, before)
    assert sorted(again) == sorted(f"step.{i}.{k}" for i in range(10) for k in (3, 4))

    # Nothing changed: nothing runs.
    before = len(ran(log, 0))
    assert rerun(tmp_path, log, gate, journal) == out
    assert ran(log, before) == []

    # An output lost: its task runs again, and so do the tasks that read it.
    lost = next(e for e in Store(journal).entries() if e.name == "step" and
                e.files[0]["name"] == "c3-2.txt")  # fmt: skip
    os.unlink(lost.files[0]["path"])
    assert "MISSING OR CHANGED" in plait_journal("show", journal, lost.key[:16])
    before = len(ran(log, 0))
    assert rerun(tmp_path, log, gate, journal) == out
    assert sorted(ran(log, before)) == ["step.3.2", "step.3.3", "step.3.4"]

    # plait journal: the 50 tasks, and forgetting some makes them (and what reads their
    # regenerated files) run again.
    listing = plait_journal("ls", journal)
    # 50, and the two readers of the regenerated file again, under new keys (their
    # input is a new file); their old entries stay, unused.
    assert "52 task(s)" in listing and listing.count(" DONE ") == 52
    assert "forgot 1 task(s)" in plait_journal("forget", journal, lost.key[:16])
    assert "forgot 0 task(s)" in plait_journal("forget", journal, "--failed")
    before = len(ran(log, 0))
    assert rerun(tmp_path, log, gate, journal) == out
    assert sorted(ran(log, before)) == ["step.3.2", "step.3.3", "step.3.4"]


def test_a_changed_input_file_runs_its_readers_again(tmp_path):
    import asyncio

    from plait import InputFile, WorkflowEngine

    data = tmp_path / "data.txt"
    data.write_text("1 2 3\n")
    log = tmp_path / "log"

    async def once():
        flow = await WorkflowEngine.create(
            work_dir=str(tmp_path), handle_signals=False, journal=str(tmp_path / "j.db")
        )

        @flow.function_task
        def total(path):
            with open(log, "a") as f:
                f.write("ran\n")
            with open(path) as f:
                return sum(int(x) for x in f.read().split())

        value = await total(InputFile(str(data)))
        await flow.shutdown()
        return value

    assert asyncio.run(once()) == 6
    assert asyncio.run(once()) == 6  # unchanged: taken from the journal
    data.write_text("1 2 3 4\n")
    assert asyncio.run(once()) == 10  # changed: runs again
    assert log.read_text().split() == ["ran", "ran"]
