"""A Dask cluster of separate processes (``dask scheduler``, ``dask worker``), reached by
address, as on a real cluster — plain TCP and TLS with certificates made here.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed.security import Security
from tests.support import make_certificates

from plait import WorkflowEngine
from plait.backends.dask import DaskExecutionBackend
from plait.errors import CommandError, ConfigurationError

DASK = str(Path(sys.executable).parent / "dask")


class ProcessCluster:
    """A scheduler and two workers, each its own process group, on 127.0.0.1."""

    def __init__(self, folder: Path, tls: list[str] | None = None) -> None:
        self.folder = folder
        self.tls = tls or []
        self.procs: list[subprocess.Popen[bytes]] = []

    def _spawn(self, *args: str, log: str) -> None:
        with open(self.folder / log, "wb") as out:
            proc = subprocess.Popen(
                [DASK, *args, *self.tls],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                start_new_session=True,
            )
        self.procs.append(proc)

    def start(self) -> str:
        file = self.folder / "scheduler.json"
        protocol = ["--protocol", "tls"] if self.tls else []
        self._spawn(
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--dashboard-address",
            ":0",
            "--scheduler-file",
            str(file),
            *protocol,
            log="scheduler.log",
        )
        deadline = time.monotonic() + 60
        while not file.exists():
            assert time.monotonic() < deadline, (self.folder / "scheduler.log").read_text()
            time.sleep(0.05)
        time.sleep(0.1)  # written, then closed
        address = json.loads(file.read_text())["address"]
        for i in range(2):
            self._spawn(
                "worker",
                address,
                "--nthreads",
                "2",
                "--no-dashboard",
                "--name",
                f"w{i}",
                log=f"worker{i}.log",
            )
        return address

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def processes(tmp_path):
    cluster = ProcessCluster(tmp_path)
    yield cluster
    cluster.stop()


async def engine(backend, tmp_path):
    await backend.ensure_started()
    await backend.client.wait_for_workers(2)
    return await WorkflowEngine.create(
        backend=backend, work_dir=str(tmp_path), handle_signals=False
    )


async def test_a_cluster_of_separate_processes_by_address(processes, tmp_path):
    address = processes.start()
    assert address.startswith("tcp://127.0.0.1:")
    flow = await engine(DaskExecutionBackend(address), tmp_path)

    @flow.function_task
    def where(x):
        return x + 1, os.getpid()

    @flow.function_task
    def add(a, b):
        return a[0] + b[0]

    @flow.executable_task
    async def show(n):
        return f"echo n={n}"

    @flow.executable_task
    async def broken():
        return "echo nope >&2; exit 3"

    first, second = where(1), where(2)
    assert await show(add(first, second)) == "n=5\n"
    pids = {pid for _, pid in await asyncio.gather(first, second)}
    assert os.getpid() not in pids  # ran in the worker processes
    with pytest.raises(CommandError, match="nope"):
        await broken()
    await flow.shutdown()
    assert all(proc.poll() is None for proc in processes.procs)  # a passed cluster stays up


async def test_a_tls_cluster_serves_a_client_with_its_certificate_only(tmp_path):
    certs = make_certificates(tmp_path / "certs")
    tls = ["--tls-ca-file", str(certs["ca"]), "--tls-cert", str(certs["cert"])]
    tls += ["--tls-key", str(certs["key"])]
    cluster = ProcessCluster(tmp_path, tls)
    try:
        address = cluster.start()
        assert address.startswith("tls://")
        security = Security(
            tls_ca_file=str(certs["ca"]),
            tls_client_cert=str(certs["cert"]),
            tls_client_key=str(certs["key"]),
            require_encryption=True,
        )
        flow = await engine(DaskExecutionBackend(address, security=security), tmp_path)

        @flow.function_task
        def square(x):
            return x * x

        @flow.executable_task
        async def show(n):
            return f"echo {n}"

        assert await show(square(7)) == "49\n"
        await flow.shutdown()

        with pytest.raises(ConfigurationError, match="speaks TLS: pass security="):
            await DaskExecutionBackend(address).ensure_started()

        stranger = make_certificates(tmp_path / "stranger")  # a certificate of another CA
        refused = Security(
            tls_ca_file=str(certs["ca"]),
            tls_client_cert=str(stranger["cert"]),
            tls_client_key=str(stranger["key"]),
            require_encryption=True,
        )
        with pytest.raises(ConfigurationError, match="cannot connect to the Dask scheduler"):
            await DaskExecutionBackend(address, security=refused).ensure_started()
    finally:
        cluster.stop()


async def test_an_unreachable_scheduler_is_a_clear_error(tmp_path):
    import dask

    backend = DaskExecutionBackend("tcp://127.0.0.1:9")  # nothing listens there
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "2s"}),
        pytest.raises(ConfigurationError, match=r"cannot connect .*127\.0\.0\.1:9"),
    ):
        await backend.ensure_started()


LOCAL_SCRIPT = """
import asyncio, os
from concurrent.futures import ThreadPoolExecutor
from plait import LocalExecutionBackend, WorkflowEngine

async def main():
    backend = await LocalExecutionBackend(ThreadPoolExecutor())   # written for one machine
    other = await LocalExecutionBackend(name="dask")   # a name the chosen backend has too
    flow = await WorkflowEngine.create([backend, other])

    @flow.function_task
    def pid(x):
        return x, os.getpid()

    @flow.function_task(backend="default")   # names the script's own backend
    def here():
        return os.getpid()

    @flow.function_task(backend="dask")      # the script's own, not the chosen one
    def also_here():
        return os.getpid()

    (value, worker), mine, too = await pid(3), await here(), await also_here()
    print("value", value, "elsewhere", worker != os.getpid(), "here", mine == os.getpid(),
          "also here", too == os.getpid())
    print("default", type(flow.backend).__name__, flow.backend.name, sorted(flow.backends))
    await flow.shutdown()

asyncio.run(main())
"""


async def test_plait_run_sends_a_local_script_to_a_cluster_by_address(processes, tmp_path):
    address = processes.start()
    script = tmp_path / "local_script.py"
    script.write_text(LOCAL_SCRIPT)
    port = address.rpartition(":")[2]
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "plait.cli", "run", "--backend", f"dask://127.0.0.1:{port}", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "value 3 elsewhere True here True also here True" in done.stdout
    assert "default DaskExecutionBackend dask-2 ['dask', 'dask-2', 'default']" in done.stdout


def test_plait_run_rejects_bad_backend_choices(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("print('ran')\n")
    config = tmp_path / "hpc.toml"
    config.write_text('backend = "slurm"\ncores = 2\nadapt = [0]\n')
    cases = [
        (["--backend", "kubernetes"], "unknown backend 'kubernetes'"),
        (["--cores", "2"], "job options need a backend"),
        (["--backend", "slurm", "--adapt", "two"], "--adapt takes MIN:MAX"),
        (["--backend", "local", "--queue", "debug"], "takes no options, got queue"),
        (["--backend-config", str(config)], "adapt must be [minimum, maximum]"),
        (["--backend", "slurm", "--jobs", "2", "--adapt", "0:2"], "not both"),
    ]
    for flags, message in cases:
        done = subprocess.run(
            [sys.executable, "-m", "plait.cli", "run", *flags, str(script)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and message in done.stderr, (flags, done.stderr)
        assert "ran" not in done.stdout  # the script never started


async def test_a_shutdown_after_a_cancel_returns_when_the_scheduler_stops_answering(
    processes, tmp_path, monkeypatch
):
    from plait.backends import base

    # Stopping a cancelled task on the cluster is bounded (kill_grace + STOP_TIMEOUT):
    # with an unbounded stop, this shutdown waits on the frozen scheduler for minutes.
    monkeypatch.setattr(base, "STOP_TIMEOUT", 1.0)
    address = processes.start()
    scheduler = processes.procs[0]
    flow = await engine(DaskExecutionBackend(address), tmp_path)

    @flow.executable_task(kill_grace=1)
    async def long():
        return "sleep 60"

    fut = long()
    deadline = time.monotonic() + 30
    while fut.state != "RUNNING":
        assert time.monotonic() < deadline, "the task never started"
        await asyncio.sleep(0.05)
    os.kill(scheduler.pid, signal.SIGSTOP)  # alive, but answers nothing
    try:
        fut.cancel()
        started = time.monotonic()
        await asyncio.wait_for(flow.shutdown(), 60)
        assert time.monotonic() - started < 20
    finally:
        os.kill(scheduler.pid, signal.SIGCONT)
