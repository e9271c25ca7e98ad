"""Keep user errors to one line on the console.

Prefect logs every failed task and flow with a full traceback. For a
:class:`~pipeline_core.errors.SeqlabError` (bad input, not a bug) the CLI prints
``error: <message>`` itself, so those records are dropped from the *console* handlers
only; they still reach Prefect's API and the run's state message.
"""

from __future__ import annotations

import logging

from pipeline_core.errors import SeqlabError


def _user_error_names() -> set[str]:
    names, todo = set(), [SeqlabError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


# Prefect's crash messages for an interrupt (prefect.states.exception_to_crashed_state)
INTERRUPT_MESSAGES = (
    "Execution was aborted by an interrupt signal",
    "Execution was aborted by a termination signal",
)


class UserErrorFilter(logging.Filter):
    """Drop error records caused by a SeqlabError (the CLI reports it in one line), and
    task-run failures: the compare flow turns each into a failed leaderboard row and one
    ``error: model <name> failed: <reason>`` line; its traceback stays in the failed
    child run (error.txt) and in Prefect's API."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        if record.name.startswith("prefect.task_runs"):
            return False
        if record.exc_info and isinstance(record.exc_info[1], SeqlabError):
            return False
        message = record.getMessage()
        if any(m in message for m in INTERRUPT_MESSAGES):
            return False  # Ctrl-C or SIGTERM: the CLI says "error: interrupted" itself
        return not any(f"{n}(" in message or f"{n}:" in message for n in _user_error_names())


def hide_user_error_tracebacks() -> None:
    """Attach :class:`UserErrorFilter` to Prefect's console handlers."""
    from prefect.logging.configuration import setup_logging
    from prefect.logging.handlers import PrefectConsoleHandler

    setup_logging()
    for logger in (logging.getLogger(), logging.getLogger("prefect")):
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and not any(
                isinstance(f, UserErrorFilter) for f in handler.filters
            ):
                handler.addFilter(UserErrorFilter())
