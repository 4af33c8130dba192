"""SIGTERM and SIGHUP handled like Ctrl-C, so that every cleanup path (`finally`, `except BaseException`) runs.

Python turns SIGINT into `KeyboardInterrupt`, but by default dies at once on SIGTERM (what `kill`, `timeout`, job
schedulers and container runtimes send) and SIGHUP (a closed terminal), skipping every cleanup: the temporary
directory of an atomic write stays behind. Commands that write or run long (`convert`, `export`, `embed`, `train`)
run under `terminate_like_interrupt`, which raises `Terminated` (a `KeyboardInterrupt`) instead; `main` exits with
`128 + signal number`, as a shell reports a process killed by that signal.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from xlm_flax.cli.common import EXIT_INTERRUPTED

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM or SIGHUP.

    Attributes:
        signum: The signal received.
        exit_status: `128 + signum` (143 for SIGTERM, 129 for SIGHUP).
    """

    def __init__(self, signum: int):
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_status = 128 + signum


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """The exit status for an interruption: 130 for Ctrl-C, `128 + signum` for `Terminated`."""
    return getattr(interrupt, "exit_status", EXIT_INTERRUPTED)


@contextlib.contextmanager
def terminate_like_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise `Terminated` in the main thread; the old handlers come back after.

    Only the first signal raises: further ones are ignored while the cleanup it started runs (a second Ctrl-C
    still interrupts it). Outside the main thread (where handlers cannot be set) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def handles_termination(command: Callable[..., int]) -> Callable[..., int]:
    """Decorates a command function to run under `terminate_like_interrupt`."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> int:
        with terminate_like_interrupt():
            return command(*args, **kwargs)

    return run


__all__ = ["SIGNALS", "Terminated", "exit_status", "handles_termination", "terminate_like_interrupt"]
