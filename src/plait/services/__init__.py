"""Service tasks: long-running servers (model servers, databases) as workflow tasks.

See :mod:`plait.services.manager` for how a service starts, is probed, lives and
stops, and :mod:`plait.services.probes` for the ``ready=`` probes.
"""

from plait.services.handle import Service, service_of

__all__ = ["Service", "service_of"]
