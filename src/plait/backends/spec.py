"""A backend named by a string and a few options: what ``plait run --backend`` takes.

=========================  ===================================================
spec                       backend
=========================  ===================================================
``local``                  :class:`~plait.backends.local.LocalExecutionBackend`
``dask``                   a Dask ``LocalCluster`` started for the run
``dask://HOST:PORT``       the Dask scheduler at that address (``tcp://``)
``tcp://…``, ``tls://…``   the Dask scheduler at that address, as given
``slurm``, ``pbs``, ``lsf``,  a dask-jobqueue cluster of batch jobs started for
``sge``, ``htcondor``,     the run and closed at its end
``moab``, ``oar``
=========================  ===================================================

Options (a dict: from a TOML file and command-line flags): for batch systems
``cores``, ``memory``, ``walltime``, ``queue``, ``account``, ``processes``,
``log_directory``, ``job_extra_directives``, ``worker_extra_args`` (dask-jobqueue's
names), and ``jobs`` or ``adapt`` (``[minimum, maximum]``); for a TLS scheduler
``tls_ca_file``, ``tls_client_cert``, ``tls_client_key``.

``plait run`` passes the spec and its options to every engine the script creates in
``PLAIT_BACKEND`` and ``PLAIT_BACKEND_OPTIONS`` (JSON); the backend made from them
becomes the engine's default, ahead of the backends the script passes itself (which
keep serving the tasks that name them).
"""

from __future__ import annotations

import json
import os
from typing import Any

from plait.backends.base import ExecutionBackend
from plait.errors import ConfigurationError

__all__ = ["ENV_BACKEND", "ENV_BACKEND_OPTIONS", "backend_from_environment", "make_backend"]

ENV_BACKEND = "PLAIT_BACKEND"
ENV_BACKEND_OPTIONS = "PLAIT_BACKEND_OPTIONS"

BATCH_SYSTEMS = ("slurm", "pbs", "lsf", "sge", "htcondor", "moab", "oar")
_TLS_OPTIONS = ("tls_ca_file", "tls_client_cert", "tls_client_key")


def make_backend(spec: str, options: dict[str, Any] | None = None) -> ExecutionBackend:
    """The backend ``spec`` names, made with ``options`` (see the module docstring).

    Raises:
        ConfigurationError: an unknown spec, or options that do not fit it.
    """
    options = dict(options or {})
    name = spec.strip()
    if name == "local":
        _no_options(name, options)
        from plait.backends.local import LocalExecutionBackend

        return LocalExecutionBackend()
    from plait.backends.dask import DaskExecutionBackend

    if name == "dask":
        return DaskExecutionBackend(**options)
    if name.startswith(("dask://", "tcp://", "tls://")):
        address = "tcp://" + name.removeprefix("dask://") if name.startswith("dask://") else name
        tls = {key: options.pop(key) for key in _TLS_OPTIONS if key in options}
        _no_options(name, options)
        security = None
        if tls:
            from distributed.security import Security

            security = Security(**tls, require_encryption=True)  # type: ignore[no-untyped-call]
        return DaskExecutionBackend(address, security=security)
    if name in BATCH_SYSTEMS:
        adapt = options.pop("adapt", None)
        if adapt is not None:
            if not (isinstance(adapt, list | tuple) and len(adapt) == 2):
                raise ConfigurationError(f"adapt must be [minimum, maximum] jobs, got {adapt!r}")
            adapt = (int(adapt[0]), int(adapt[1]))
        return DaskExecutionBackend.jobqueue(name, adapt=adapt, **options)
    raise ConfigurationError(
        f"unknown backend {spec!r}: use local, dask, dask://HOST:PORT, tcp://..., tls://..., "
        f"or a batch system ({', '.join(BATCH_SYSTEMS)})"
    )


def _no_options(spec: str, options: dict[str, Any]) -> None:
    if options:
        raise ConfigurationError(
            f"backend {spec!r} takes no options, got {', '.join(sorted(options))}"
        )


def backend_from_environment() -> ExecutionBackend | None:
    """The backend ``PLAIT_BACKEND`` names (with ``PLAIT_BACKEND_OPTIONS``), if set.

    Raises:
        ConfigurationError: a spec or options that cannot be read.
    """
    spec = os.environ.get(ENV_BACKEND)
    if not spec:
        return None
    raw = os.environ.get(ENV_BACKEND_OPTIONS) or "{}"
    try:
        options = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{ENV_BACKEND_OPTIONS} is not JSON: {exc}") from exc
    if not isinstance(options, dict):
        raise ConfigurationError(f"{ENV_BACKEND_OPTIONS} must be a JSON object, got {raw!r}")
    return make_backend(spec, options)
