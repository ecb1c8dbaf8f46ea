"""The durable run journal: a re-run skips every task that already succeeded.

With ``WorkflowEngine.create(journal="run.db")`` (or ``PLAIT_JOURNAL=run.db`` in the
environment), each task that succeeds has its result written to a SQLite file,
committed at once, so that a process killed at any moment loses no finished result.
The next run of the same script finds each task's result under the task's *key*
(:mod:`plait.journal.keys`) and uses it instead of running the task again.

Tasks that declare files are journaled with them (:mod:`plait.journal.files`): their
key counts the files in their sandbox, their outputs are recorded (path, size,
SHA-256), and on a re-run the outputs are linked into the new sandbox, or the task
runs again if one is missing or changed. ``plait journal ls|show|forget RUN.db``
lists, shows and drops entries (:mod:`plait.journal.cli`).

Not journaled: tasks with ``cache=False``, services, blocks (their members are),
results that stay on a Dask cluster, files on a backend that does not share the
engine's filesystem, and values that cannot be pickled (those tasks simply run again
next time). Writes happen in a thread of their own, never on the event loop.

The file (:mod:`plait.journal.store`) is checked before anything is written to it: a
file that is not a plait journal raises :class:`~plait.errors.JournalError` and is
left untouched.
"""

from plait.journal.keys import task_key
from plait.journal.run_journal import MISSING, Journal
from plait.journal.store import Entry, Store

__all__ = ["MISSING", "Entry", "Journal", "Store", "task_key"]
