"""Stopping a run cleanly on Ctrl-C (SIGINT) or SIGTERM.

Python raises :class:`KeyboardInterrupt` in the main thread only, but Prefect runs the
models' tasks on worker threads, which would train on to the last epoch. Under
:func:`handle_signals` a signal also sets a process-wide stop flag: training checks it
after every batch (:func:`raise_if_stopped`) and a task that has not begun yet does not
begin, so each worker ends within a batch with the same exception, and every run it had
open is marked KILLED on the way out (:meth:`pipeline_core.tracking.Tracker.run`).
SIGTERM raises :class:`Terminated`, a ``KeyboardInterrupt`` the CLI reports with exit
code 143 instead of 130. While a flow runs, Prefect's engine answers SIGTERM with its own
``TerminationSignal``: :func:`stopping_workers` (around the models) and
:func:`handle_signals` treat it the same way.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

_STOP = threading.Event()
_SIGNAL: list[int] = []


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by SIGTERM."""


def request_stop(signum: int = int(signal.SIGINT)) -> None:
    if not _STOP.is_set():
        _SIGNAL[:] = [signum]
    _STOP.set()


def stop_requested() -> bool:
    return _STOP.is_set()


def received_signal() -> int | None:
    """The signal that asked this process to stop, if one did."""
    return _SIGNAL[0] if _SIGNAL else None


def _exception() -> KeyboardInterrupt:
    if _SIGNAL and _SIGNAL[0] == signal.SIGTERM:
        return Terminated("terminated")
    return KeyboardInterrupt("interrupted")


def raise_if_stopped() -> None:
    """Raise the interrupt in this thread when a stop was requested."""
    if _STOP.is_set():
        raise _exception()


def reset() -> None:
    _STOP.clear()
    _SIGNAL.clear()


def _handler(signum: int, frame: FrameType | None) -> None:
    request_stop(signum)
    raise _exception()


def _signal_of(err: BaseException) -> int | None:
    """The signal behind an interrupt-like exception (not an ``Exception``), if any:
    SIGINT for KeyboardInterrupt, an engine's own (Prefect's ``TerminationSignal``
    carries ``.signal``), else None."""
    if isinstance(err, Exception):
        return None
    if isinstance(err, Terminated):
        return int(signal.SIGTERM)
    if isinstance(err, KeyboardInterrupt):
        return int(signal.SIGINT)
    sig = getattr(err, "signal", None)
    return int(sig) if isinstance(sig, int) else None


@contextlib.contextmanager
def stopping_workers() -> Iterator[None]:
    """An interrupt that reaches this block, whoever's handler raised it (Prefect's flow
    engine raises its own ``TerminationSignal`` on SIGTERM), stops the workers too."""
    try:
        yield
    except BaseException as err:
        sig = _signal_of(err)
        if sig is not None:
            request_stop(sig)
        raise


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """In the main thread: SIGINT and SIGTERM raise an interrupt here and stop every
    worker at its next check; the previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    reset()
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:  # e.g. nohup, or `cmd &` in a script
            signal.signal(sig, _handler)
    try:
        yield
    except BaseException as err:
        if not isinstance(err, KeyboardInterrupt) and _signal_of(err) == signal.SIGTERM:
            request_stop(signal.SIGTERM)
            raise Terminated("terminated") from None  # the CLI's one line, exit 143
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
