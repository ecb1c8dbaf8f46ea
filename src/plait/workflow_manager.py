"""radical.asyncflow's module path for the engine.

``from plait.workflow_manager import WorkflowEngine`` works as the reference's does.
"""

from plait.engine import WorkflowEngine

__all__ = ["WorkflowEngine"]
