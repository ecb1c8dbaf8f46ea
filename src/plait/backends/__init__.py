"""Execution backends: plait's contract (:mod:`.base`) and its implementations.

``local`` and ``noop`` are always available; ``compat`` adapts backends written for
radical.asyncflow.
"""
