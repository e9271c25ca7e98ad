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


# Prefect's background services (events, API logs) log their shutdown drain by class
# name: "Still processing items: N items remaining...". That is Prefect's bookkeeping on
# the way out, not something the user can act on; after Ctrl-C it would come before the
# CLI's one line.
SERVICE_LOGGERS = ("EventsWorker", "APILogWorker")


class UserErrorFilter(logging.Filter):
    """Drop Prefect's service drain warnings, error records caused by a SeqlabError (the
    CLI reports it in one line), and task-run failures: the compare flow turns each into
    a failed leaderboard row and one ``error: model <name> failed: <reason>`` line; its
    traceback stays in the failed child run (error.txt) and in Prefect's API."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name in SERVICE_LOGGERS and record.levelno < logging.ERROR:
            return False
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
    """Attach :class:`UserErrorFilter` to Prefect's console handlers, and keep Prefect's
    services' loggers at ERROR (the filter alone misses handlers set up later, e.g. for a
    temporary server's settings)."""
    from prefect.logging.configuration import setup_logging
    from prefect.logging.handlers import PrefectConsoleHandler

    setup_logging()
    for name in SERVICE_LOGGERS:  # also when Prefect later replaces its console handlers
        logging.getLogger(name).setLevel(logging.ERROR)
    for logger in (logging.getLogger(), logging.getLogger("prefect")):
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and not any(
                isinstance(f, UserErrorFilter) for f in handler.filters
            ):
                handler.addFilter(UserErrorFilter())
