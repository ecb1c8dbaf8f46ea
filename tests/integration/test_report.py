"""``plait report``: from a real run's JSONL to an HTML page, checked in headless Chromium."""

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plait import WorkflowEngine
from plait.telemetry.report import GANTT_TASKS_MAX, load, write_report

CHARTS = ["gantt", "concurrency", "throughput", "duration", "dependency-wait", "resources"]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def record_run(tmp_path: Path, tasks: int) -> Path:
    flow = await WorkflowEngine.create(work_dir=str(tmp_path), handle_signals=False)
    path = tmp_path / "run.jsonl"
    await flow.start_telemetry(checkpoint_path=str(path), resource_poll_interval=0.05)

    @flow.function_task
    async def simulate(i):
        await asyncio.sleep(0.001 * (i % 5))
        if i % 10 == 3:
            raise ValueError(f"diverged at {i}")
        return i

    @flow.executable_task
    async def post(x):
        return f"echo {x}"

    sims = [simulate(i) for i in range(tasks)]
    await asyncio.gather(*[post(s) for s in sims[:20]], *sims, return_exceptions=True)
    await flow.shutdown()
    return path


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Debian's chromium is needed: `apt-get install chromium` (.ci/run does it)"
    return found


def test_report_html_opens_in_headless_chromium_with_every_chart(tmp_path):
    path = asyncio.run(record_run(tmp_path, 60))
    page = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "plait.cli", "report", str(path), "-o", str(page)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and "8 failed" in done.stdout  # 6 sims, 2 posts after them
    html = page.read_text()
    assert "http://" not in html and "https://" not in html  # nothing fetched to view it
    browser = chromium()
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    for chart in CHARTS:
        tag = re.search(rf'<img[^>]*id="{chart}"[^>]*>', dom)
        assert tag, f"chart {chart} missing"
        assert 'data-loaded="true"' in tag.group(0), f"chart {chart} did not load"
    assert dom.count("<tr>") == 1 + 8  # header + the eight failures
    assert "diverged at 3" in dom
    shot = tmp_path / "report.png"
    subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1300,2000",
         f"--screenshot={shot}", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_report_png_and_aggregated_timeline_for_large_runs(tmp_path):
    path = asyncio.run(record_run(tmp_path, GANTT_TASKS_MAX + 200))
    run = load(path)
    assert len(run.tasks) == GANTT_TASKS_MAX + 220
    assert run.metrics
    png = write_report(run, tmp_path / "charts.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    page = write_report(run, tmp_path / "big.html")
    assert "aggregated" not in page.read_text()  # titles are inside the images...
    import matplotlib.pyplot as plt

    from plait.telemetry import report

    fig, ax = plt.subplots()
    report._gantt(ax, run)
    assert "aggregated" in ax.get_title()  # ...so check the timeline's own title
    plt.close(fig)


def test_report_rejects_files_that_are_not_checkpoints(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"section": "metric", "checkpoint_time": 1}\nnot json\n')
    done = subprocess.run(
        [sys.executable, "-m", "plait.cli", "report", str(bad)], capture_output=True, text=True
    )
    assert done.returncode == 2 and "bad.jsonl:2: not a JSON line" in done.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "plait.cli", "report", str(tmp_path / "nope.jsonl")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "No such file" in missing.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"section": "metric", "checkpoint_time": 1}\n')
    with pytest.raises(ValueError, match="no task events"):
        load(empty)
