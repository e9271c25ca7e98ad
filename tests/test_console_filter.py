"""The console filter keeps what the user can act on and drops Prefect's bookkeeping."""

from __future__ import annotations

import logging

from flows.console import UserErrorFilter
from pipeline_core.errors import SeqlabError


def _record(
    name: str, level: int, message: str, exc: BaseException | None = None
) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord(name, level, __file__, 1, message, None, exc_info)


def test_service_drain_warnings_never_reach_the_console() -> None:
    keep = UserErrorFilter().filter
    drain = "Still processing items: 1 items remaining..."
    assert not keep(_record("EventsWorker", logging.WARNING, drain))
    assert not keep(_record("APILogWorker", logging.WARNING, drain))
    # an error from the same service is a real problem and stays
    assert keep(_record("EventsWorker", logging.ERROR, "Service failed"))
    # other libraries' warnings stay
    assert keep(_record("some.library", logging.WARNING, drain))


def test_user_errors_and_interrupts_are_left_to_the_cli_line() -> None:
    keep = UserErrorFilter().filter
    assert not keep(_record("prefect.flow_runs", logging.ERROR, "boom", SeqlabError("bad")))
    assert not keep(
        _record("prefect.flow_runs", logging.ERROR, "Execution was aborted by an interrupt signal")
    )
    assert not keep(_record("prefect.task_runs", logging.ERROR, "Task run failed"))
    assert keep(_record("prefect.flow_runs", logging.ERROR, "ValueError: a real bug"))


def test_service_loggers_stay_at_error_whatever_handlers_come_later() -> None:
    from flows.console import SERVICE_LOGGERS, hide_user_error_tracebacks

    hide_user_error_tracebacks()
    for name in SERVICE_LOGGERS:
        logger = logging.getLogger(name)
        assert not logger.isEnabledFor(logging.WARNING)
        assert logger.isEnabledFor(logging.ERROR)
