"""``plait run``: a workflow script run unchanged, with telemetry and a report."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def plait(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plait.cli", *args],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip


def test_run_records_telemetry_and_writes_a_report(tmp_path):
    done = plait(
        "run", "--progress", "--telemetry", "tel", "--report", "report.html",
        str(EXAMPLES / "pipeline.py"), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "combined 8 samples" in done.stdout  # the script ran as with python
    (jsonl,) = (tmp_path / "tel").glob("plait.session.*.jsonl")
    assert '"event_type":"TaskCompleted"' in jsonl.read_text().replace(" ", "")
    html = (tmp_path / "report.html").read_text()
    assert 'id="gantt"' in html and "25 tasks" in html
    assert "\x1b[" not in done.stdout  # piped: the progress display stayed silent


def test_run_passes_arguments_and_exit_status(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import sys\nprint('args:', sys.argv[1:])\nsys.exit(int(sys.argv[1]))\n")
    done = plait("run", str(script), "3", "--flag", cwd=tmp_path)
    assert done.returncode == 3
    assert "args: ['3', '--flag']" in done.stdout


def test_run_reports_a_failing_script_and_a_missing_one(tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("raise RuntimeError('workflow broke')\n")
    done = plait("run", str(script), cwd=tmp_path)
    assert done.returncode == 1 and "workflow broke" in done.stderr
    missing = plait("run", "nope.py", cwd=tmp_path)
    assert missing.returncode == 2 and "no such script" in missing.stderr


def test_run_with_a_journal_skips_finished_tasks_the_second_time(tmp_path):
    script = tmp_path / "flow.py"
    script.write_text(
        "import asyncio\n"
        "from plait import WorkflowEngine\n"
        "async def main():\n"
        "    async with WorkflowEngine.create() as flow:\n"
        "        @flow.executable_task\n"
        "        async def work(i):\n"
        "            return f'echo ran {i} >> ran.log; echo {i}'\n"
        "        print(sum(int(x) for x in await asyncio.gather(*(work(i) for i in range(4)))))\n"
        "asyncio.run(main())\n"
    )
    for _ in range(2):
        done = plait("run", "--journal", "run.db", str(script), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "6"
    assert len((tmp_path / "ran.log").read_text().splitlines()) == 4  # not 8
