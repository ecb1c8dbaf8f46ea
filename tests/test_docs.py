"""The documentation site: every Python block runs, the site builds strictly, the API
reference renders in a real browser."""

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tests.docs_runner import blocks

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
RUNNABLE = [p for p in PAGES if any(not b.skipped for b in blocks(p.read_text()))]


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: str(p.relative_to(DOCS)))
def test_every_python_block_of_a_page_runs(page, tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "docs_runner.py"), str(page)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    runnable = sum(not b.skipped for b in blocks(page.read_text()))
    assert done.stdout.strip().endswith(f"ran {runnable} blocks"), done.stdout[-2000:]


def test_a_block_that_is_not_run_says_why_on_the_page():
    skipped = [(p, b) for p in PAGES for b in blocks(p.read_text()) if b.skipped]
    assert skipped, "the Slurm, TLS and OTLP examples are marked"
    for page, block in skipped:
        reason = block.skipped.removeprefix("Not run by the docs tests:").strip()
        assert len(reason) > 10, f"{page}:{block.line}: say why it is not run"
    assert len(RUNNABLE) >= 12


def test_every_page_is_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in PAGES:
        assert str(page.relative_to(DOCS)) in nav, f"{page} is not in mkdocs.yml's nav"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built with --strict (a warning fails the build), served on 127.0.0.1."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    handler = functools.partial(_Quiet, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        return None


def chromium(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "Debian's chromium is needed: `apt-get install chromium` (make test does it)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120)


def test_the_api_page_of_workflow_engine_create_renders_its_signature_and_docstring(site, tmp_path):
    page = f"{site}/api/engine/"
    dom = chromium("--dump-dom", page, tmp_path=tmp_path).stdout
    assert "plait.engine.WorkflowEngine.create" in dom
    for parameter in ("backend", "dry_run", "implicit_data", "work_dir", "journal"):
        assert f">{parameter}<" in dom  # the signature and the parameters' table
    assert "Create an engine; await the result, or use it with" in dom  # its docstring
    assert ":class:" not in dom  # Sphinx roles turned into code (scripts/mkdocs_hooks.py)
    shot = tmp_path / "create.png"
    chromium("--window-size=1280,1100", f"--screenshot={shot}", page, tmp_path=tmp_path)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (1100, 1280)
    assert pixels[:, :, :3].std() > 0.05  # not a blank page: text, code, a header bar
