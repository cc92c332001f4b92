"""Model reloads during the soak: every `every` seconds each model that receives traffic is
reloaded, through the repository API (`POST /v2/repository/models/{m}/load`: a new instance
loads beside the serving one, the view swaps, the old one drains and unloads; for the
isolated model a new worker process replaces the old one), or in poll mode by touching its
model file (the poll mode refuses the load API; the file's new mtime changes the model's
fingerprint, so the next scan reloads it)."""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Reload", "Reloader"]

_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Reload:
    t: float  # seconds into the soak when it was asked for
    model: str
    how: str  # "load API" or "touch"
    answer: str  # "HTTP 200", "HTTP 4xx ...", or the client error; "touched" in poll mode
    seconds: float
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.answer in ("HTTP 200", "touched")


@dataclass
class Reloader:
    base_url: str
    models: tuple[str, ...]
    every: float
    started: float
    #: Poll mode: the file to touch per model (None: use the load API).
    touch: dict[str, Path] | None = None
    reloads: list[Reload] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="soak-reloader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        tick = 1
        while not self._stop.wait(max(0.0, self.started + tick * self.every - time.monotonic())):
            tick += 1
            for model in self.models:
                self.reloads.append(self._reload(model))

    def _reload(self, model: str) -> Reload:
        t = time.monotonic() - self.started
        if self.touch is not None:
            os.utime(self.touch[model])
            return Reload(t, model, "touch", "touched", 0.0)
        request = urllib.request.Request(
            f"{self.base_url}/v2/repository/models/{model}/load", data=b"", method="POST"
        )
        began = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
                answer, detail = f"HTTP {response.status}", ""
        except urllib.error.HTTPError as exc:
            answer, detail = f"HTTP {exc.code}", exc.read()[:300].decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            answer, detail = f"client error {type(exc).__name__}", str(exc)[:300]
        return Reload(t, model, "load API", answer, time.monotonic() - began, detail)
