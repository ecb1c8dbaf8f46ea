"""radical.asyncflow's module path for file declarations: ``from plait.data import InputFile``.

``File`` is the base class of both, as in the reference.
"""

from plait.staging.files import DataFile as File
from plait.staging.files import InputFile, OutputFile

__all__ = ["File", "InputFile", "OutputFile"]
