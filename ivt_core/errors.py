"""User-facing errors.

Every error a user can cause (a wrong path, a bad dataset, a config that makes no sense) is raised as an
``IVTError`` whose message says what to fix. The CLI prints it as one line and exits non-zero; the UI shows it.
Model output is never a reason to raise: ``parse`` turns it into a ``ParseFailure`` instead.
"""


class IVTError(Exception):
    """An error caused by the user's input; the message says how to fix it."""


class NotFoundError(IVTError):
    """A named thing (path, dataset, run, model) does not exist."""


class InvalidInputError(IVTError):
    """An input exists but cannot be used as given (bad value, corrupt file, wrong kind of folder)."""


class JobCancelled(Exception):
    """Raised in a job's main thread when it receives SIGTERM (``jobs.cancel``): the job stops after the batch
    in flight, keeps what it wrote and marks itself cancelled. Not a user error."""
