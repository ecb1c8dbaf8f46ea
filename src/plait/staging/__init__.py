"""Data between tasks: declared files, per-task sandboxes, and staging.

``files`` holds what users write (:class:`InputFile`, :class:`OutputFile`) and what
bodies receive (:class:`StagedFile`); ``sandbox`` prepares a task's sandbox before it
runs and checks its outputs after; ``remote`` fetches URLs through fsspec.
"""

from plait.staging.files import DataFile, InputFile, OutputFile, StagedFile

__all__ = ["DataFile", "InputFile", "OutputFile", "StagedFile"]
