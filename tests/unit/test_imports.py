"""What ``import plait`` loads: the engine's own needs, not every optional part's."""

import json
import subprocess
import sys

# Loaded only by the parts that need them: a run journal (sqlite3), a process pool
# (multiprocessing, cloudpickle), an HTTP readiness probe (urllib.request), custom
# telemetry events and the checkpoint writer (the schema module, orjson).
OPTIONAL = [
    "sqlite3",
    "multiprocessing",
    "cloudpickle",
    "urllib.request",
    "plait.journal",
    "plait.telemetry.schema",
    "plait.telemetry.manager",
    "orjson",
]


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_import_plait_leaves_the_optional_parts_unloaded():
    loaded = _loaded_after("import plait")
    assert "plait.engine" in loaded
    assert [m for m in OPTIONAL if m in loaded] == []


def test_the_optional_parts_load_when_used():
    loaded = _loaded_after(
        "from plait.telemetry import define_event\n"
        "from plait.services.probes import _http_ok\n"
        "_http_ok('http://127.0.0.1:9/')"
    )
    assert {"plait.telemetry.schema", "urllib.request"} <= loaded
