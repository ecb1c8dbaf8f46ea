"""Every script in examples/ runs and produces what it promises."""

import re
import subprocess
import sys
from pathlib import Path

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
