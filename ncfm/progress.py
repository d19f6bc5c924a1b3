"""One voice for progress: the `ncfm` logger, its console line and a fold's train.log.

Every stage logs milestones with `progress.say(...)` (or `logging.getLogger("ncfm.<stage>")`);
the command layer calls `configure()` once, which prints them to the console as
`[HH:MM:SS] message`, and a fold that is training adds its train.log for as long as it runs
(`to_file`). Long steps (checking, decoding, grouping, cutting) also show a tqdm bar on stderr when
it is a terminal; a log file gets only their milestone lines.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

LOG = logging.getLogger("ncfm")
FORMAT = logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S")


class _Console(logging.Handler):
    """Writes to whatever sys.stdout is when a line is logged (pytest and Ray swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:  # a closed console must not stop training
            self.handleError(record)


def configure() -> None:
    """Print the `ncfm` logger's INFO lines and above on the console, once per process."""
    if any(isinstance(h, _Console) for h in LOG.handlers):
        return
    console = _Console()
    console.setFormatter(FORMAT)
    LOG.addHandler(console)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False  # a host application's root handlers would print every line twice


def say(message: str) -> None:
    """A milestone line: console and, while a fold trains, its train.log."""
    configure()
    LOG.info(message)


@contextlib.contextmanager
def to_file(path: Path):
    """Also write every progress line to `path` (appended) while the block runs."""
    configure()
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(FORMAT)
    LOG.addHandler(handler)
    try:
        yield
    finally:
        LOG.removeHandler(handler)
        handler.close()
