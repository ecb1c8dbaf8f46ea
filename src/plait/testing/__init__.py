"""Helpers for testing workflows: a small OpenAI-compatible server to run prompts against."""

from plait.testing.openai_stub import OpenAIStubServer

__all__ = ["OpenAIStubServer"]
