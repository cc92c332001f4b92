"""A file parsed once, and again when it changes (looked at, at most once a second, by
whoever asks for it): the last good version stays in force when a new one does not parse."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

__all__ = ["WatchedFile"]

T = TypeVar("T")

logger = logging.getLogger("inferbridge.security")

_Signature = tuple[int, int, int, int]


def _signature(path: Path) -> _Signature:
    stat = os.stat(path)
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


class WatchedFile(Generic[T]):
    """`parse(bytes)` of the file at `path`. The constructor raises what `parse` raises
    (or OSError), so a bad file stops a server before it serves; later, `current()`
    re-reads a changed file and logs (once per version) why a bad one is ignored."""

    def __init__(
        self,
        path: Path,
        parse: Callable[[bytes], T],
        *,
        what: str,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._parse = parse
        self._what = what
        self._interval_s = interval_s
        self._clock = clock
        self._signature = _signature(path)
        self._value = parse(path.read_bytes())
        self._checked = clock()
        self._complaint = ""  # the last reason logged, so that a missing file is logged once
        self.version = 1  # how many good versions have been loaded

    def current(self) -> T:
        now = self._clock()
        if now - self._checked >= self._interval_s:
            self._checked = now
            self._reload_if_changed()
        return self._value

    def _reload_if_changed(self) -> None:
        try:
            # The signature is taken before reading: a write that lands after it changes
            # the signature again, and the next look reads the file once more.
            signature = _signature(self.path)
            if signature == self._signature:
                return
            self._signature = signature
            data = self.path.read_bytes()
        except OSError as exc:
            self._signature = (-1, -1, -1, -1)  # read it again once it is back
            reason = str(exc.strerror or exc)
            if reason != self._complaint:
                self._complaint = reason
                logger.warning(
                    "%s %s cannot be read (%s); the last good one stays in force",
                    self._what,
                    self.path,
                    reason,
                )
            return
        try:
            value = self._parse(data)
        except ValueError as exc:
            self._complaint = str(exc)
            logger.warning(
                "%s %s is not valid (%s); the last good one stays in force",
                self._what,
                self.path,
                exc,
            )
            return
        self._value = value
        self._complaint = ""
        self.version += 1
        logger.info("%s %s reloaded", self._what, self.path)
