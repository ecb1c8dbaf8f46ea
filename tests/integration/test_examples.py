"""Every script in examples/ runs and produces what it promises."""

import re
import subprocess
import sys
from pathlib import Path

from tests.support import pid_alive

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(name: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=60, cwd=cwd
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_pipeline_example_mixes_commands_and_functions(tmp_path):
    out = run("pipeline.py", tmp_path)
    lines = re.findall(r"^seed (\d): n=20000 mean=(0\.\d+)", out, flags=re.M)
    assert [int(seed) for seed, _ in lines] == list(range(1, 9))
    assert len({mean for _, mean in lines}) == 8  # eight different samples
    grand = float(re.search(r"grand mean (0\.\d+)", out).group(1))
    assert abs(grand - 0.5) < 0.02


def test_files_example_hands_files_along_a_chain_and_a_fan_in(tmp_path):
    work = tmp_path / "work"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "files.py"), str(work)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    rows = re.findall(r"^(\d) (-?\d+\.\d) (-?\d+\.\d)$", done.stdout, flags=re.M)
    assert rows == [(str(r), f"{-float(r)}", "0.0") for r in range(1, 5)]
    (session,) = work.iterdir()
    tables = list(session.glob("task.*/table.txt"))
    assert len(tables) == 2  # produced by merge, linked into report
    assert sum(t.is_symlink() for t in tables) == 1


def test_llm_pipeline_example_runs_against_the_bundled_stub(tmp_path):
    out = run("llm_pipeline.py", tmp_path)
    lines = [line for line in out.splitlines() if line.startswith("- reply to: Experiment")]
    assert [line.split()[4] for line in lines] == ["1", "2", "3"]
    assert re.search(r"3 summaries from stub-model for \d+ tokens", out)


def test_llm_service_example_starts_a_server_asks_100_questions_and_stops_it(tmp_path):
    out = run("llm_service.py", tmp_path)
    assert re.search(r"^server up at http://127\.0\.0\.1:\d+ \(pid \d+\)", out, flags=re.M)
    assert "100 replies" in out
    assert "first: reply to: In one sentence: why is the number 0 interesting?" in out
    assert "server stopped: True" in out
    pid = int(re.search(r"\(pid (\d+)\)", out).group(1))
    assert not pid_alive(pid)
