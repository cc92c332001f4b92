"""The live model set: load, swap, drain and unload model versions while serving.

Every model is an immutable `ModelView` in one dict; the dataplane reads it with one
lookup per request. A change (load, reload, unload) runs under that model's lock, loads new
versions on a worker thread beside the old ones, swaps the view in one assignment, then
drains the versions it replaced — their queued and in-flight requests finish — and only
then unloads them. A change that fails to load leaves what was serving untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from inferbridge.batching.scheduler import BatchObserver, BatchTiming
from inferbridge.dataplane.executor import build_scheduler
from inferbridge.errors import (
    ConfigError,
    InferBridgeError,
    ModelBusy,
    ModelLoadError,
    ModelNotFound,
)
from inferbridge.models.requests import LoadRequest
from inferbridge.models.served import ModelView, ServingVersion
from inferbridge.models.source import (
    ModelSource,
    Planner,
    VersionPlan,
    check_model_name,
    model_directories,
    resolve_source,
    source_fingerprint,
)
from inferbridge.observability.stats import VersionStats
from inferbridge.repository.config import ModelConfig
from inferbridge.repository.repository import LoadedVersion, load_version, unload_version

__all__ = ["ControlMode", "IndexEntry", "ModelManager", "TracerFactory", "VersionPlanner"]

logger = logging.getLogger(__name__)

#: Makes the tracing observer of one version's batches (model, version) when tracing is on.
TracerFactory = Callable[[str, int], BatchObserver]
#: The rollouts' say in which versions load (model, config, versions on disk, the version
#: serving unversioned requests now): see `VersionPlan`.
VersionPlanner = Callable[[str, ModelConfig, list[int], int | None], VersionPlan | None]


class ControlMode(StrEnum):
    NONE = "none"
    POLL = "poll"
    EXPLICIT = "explicit"


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str
    state: str  # READY, UNAVAILABLE, LOADING, UNLOADING
    reason: str


class ModelManager:
    """Owns the served models of one repository (None: no repository, only models sent in
    load requests) and every transition between them."""

    def __init__(
        self,
        root: Path | None,
        *,
        histograms: bool = True,
        drain_timeout_s: float = 30.0,
        tracer: TracerFactory | None = None,
    ) -> None:
        self.root = root
        self.views: dict[str, ModelView] = {}
        self._histograms = histograms
        self._drain_timeout_s = drain_timeout_s
        self._tracer = tracer
        self._locks: dict[str, asyncio.Lock] = {}
        self._loading: dict[str, set[int] | None] = {}  # model -> versions being loaded
        self._unloading: set[str] = set()
        self._unloaded: set[str] = set()
        self._listeners: list[Callable[[], None]] = []
        self._scratch: Path | None = None
        #: Set by the rollout controller; consulted whenever a model's versions are chosen.
        self.planner: VersionPlanner | None = None

    # -- observers ---------------------------------------------------------------------

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` (on the event loop) after every change of the served set."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:  # a listener's bug must not undo a finished change
                logger.exception("model set listener failed")

    # -- transitions ---------------------------------------------------------------------

    async def load(
        self,
        name: str,
        request: LoadRequest | None = None,
        *,
        reason: str,
        only_changed: bool = False,
        partial: bool = False,
    ) -> None:
        """Load `name` (or reload it beside the versions serving now, then swap).

        `only_changed` keeps versions whose files did not change (the poll mode); `partial`
        installs whichever versions loaded even if others failed (start-up). Otherwise any
        failure discards the whole change and raises ModelLoadError; what served before
        serves on. A second load of a model while one is running raises ModelBusy."""
        check_model_name(name)
        if name in self._loading:
            raise ModelBusy(
                f"model '{name}' is being loaded already; wait for that load to finish"
            )
        self._loading[name] = None
        try:
            async with self._lock(name):
                await self._load_locked(name, request, reason, only_changed, partial)
        finally:
            self._loading.pop(name, None)

    async def unload(self, name: str, *, reason: str, unload_dependents: bool = False) -> None:
        """Stop serving `name`: new requests get 503 while it drains, 404 afterwards."""
        check_model_name(name)
        dependents: list[str] = []
        async with self._lock(name):
            view = self.views.get(name)
            if view is None:
                if name in model_directories(self.root):
                    return  # not loaded: nothing to do (Triton answers success too)
                raise ModelNotFound(f"model '{name}' is not loaded and not in the repository")
            if unload_dependents:
                dependents = sorted(n for n, v in self.views.items() if name in v.dependencies)
            self._unloading.add(name)
            self.views[name] = replace(view, draining=True)
            self._changed()
            try:
                await self._retire(view.versions.values())
            finally:
                self._unloading.discard(name)
                self.views.pop(name, None)
                self._unloaded.add(name)
                _remove(view.override_dir)
                self._changed()
            logger.info(
                "unloaded model '%s' (%s)",
                name,
                reason,
                extra={"event": "unload", "model": name, "reason": reason},
            )
        for dependent in dependents:
            await self.unload(dependent, reason=f"it uses '{name}', which was unloaded")

    async def load_initial(self, names: Iterable[str] | None) -> None:
        """Start-up: load every model directory (`names` None) or just these; a model that
        fails is listed with its reason and does not stop the others."""
        wanted = model_directories(self.root) if names is None else list(names)
        for name in wanted:
            try:
                await self.load(name, reason="start-up", partial=True)
            except InferBridgeError as exc:
                logger.error("model '%s' not loaded: %s", name, exc.message)

    async def reconcile(self) -> None:
        """The poll mode's pass: load new directories, unload removed ones, reload changed
        ones. Level-triggered: it compares the directory with what is served, so a missed
        or repeated event does no harm."""
        on_disk = set(await asyncio.to_thread(model_directories, self.root))
        served = set(self.views)
        for name in sorted(served - on_disk):
            if self.views[name].override_dir is None:
                await self._try(self.unload(name, reason="its directory left the repository"))
        for name in sorted(on_disk):
            view = self.views.get(name)
            if view is not None and view.override_dir is not None:
                continue  # loaded from a request's files; the directory does not own it
            now = await asyncio.to_thread(source_fingerprint, self.root, name, self._planner(name))
            if view is not None and now in (view.fingerprint, view.attempted):
                continue
            why = "new in the repository" if view is None else "changed in the repository"
            await self._try(self.load(name, reason=why, only_changed=True))

    async def shutdown(self) -> None:
        """Unload everything at once (the front ends have drained already)."""
        views, self.views = list(self.views.values()), {}
        for view in views:
            for serving in view.versions.values():
                serving.scheduler.close()
            await asyncio.to_thread(_unload_all, [s.loaded for s in view.versions.values()])
            _remove(view.override_dir)
        if self._scratch is not None:
            _remove(self._scratch)

    # -- read ------------------------------------------------------------------------------

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Triton's repository index: every model directory and every served model, with
        the state of each version and the reason of any failure."""
        entries: list[IndexEntry] = []
        names = set(model_directories(self.root)) | set(self.views) | set(self._loading)
        for name in sorted(names):
            entries.extend(self._entries(name))
        if ready_only:
            entries = [e for e in entries if e.state == "READY"]
        return entries

    def _entries(self, name: str) -> list[IndexEntry]:
        view = self.views.get(name)
        loading = self._loading.get(name)
        if view is None:
            if name in self._loading:
                numbers = sorted(loading) if loading else []
                return [IndexEntry(name, str(n), "LOADING", "") for n in numbers] or [
                    IndexEntry(name, "", "LOADING", "")
                ]
            why = "unloaded" if name in self._unloaded else "not loaded"
            return [IndexEntry(name, "", "UNAVAILABLE", why)]
        entries: list[IndexEntry] = []
        state = "UNLOADING" if view.draining else "READY"
        for number, serving in sorted(view.versions.items()):
            # An isolated runtime's worker that is restarting or gave up: not ready, and why.
            down = "" if view.draining else serving.unavailable_reason
            entries.append(
                IndexEntry(name, str(number), "UNAVAILABLE" if down else state, down or view.error)
            )
        for number in sorted(view.failed):
            if number not in view.versions:
                entries.append(
                    IndexEntry(name, str(number), "UNAVAILABLE", view.failed[number].reason)
                )
        for number in sorted(loading or ()):
            if number not in view.versions:
                entries.append(IndexEntry(name, str(number), "LOADING", ""))
        if not entries:
            entries.append(IndexEntry(name, "", "UNAVAILABLE", view.error))
        return entries

    # -- internals -------------------------------------------------------------------------

    def _planner(self, name: str) -> Planner | None:
        planner = self.planner
        if planner is None:
            return None
        view = self.views.get(name)
        serving = view.default if view is not None else None
        current = serving.number if serving is not None else None
        return lambda config, available: planner(name, config, available, current)

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    async def _try(self, change: Awaitable[None]) -> None:
        try:
            await change
        except InferBridgeError as exc:
            logger.error("repository change not applied: %s", exc.message)

    async def _load_locked(
        self,
        name: str,
        request: LoadRequest | None,
        reason: str,
        only_changed: bool,
        partial: bool,
    ) -> None:
        old = self.views.get(name)
        scratch = self._scratch_dir() if request is not None and request.files else None
        try:
            source = await asyncio.to_thread(
                resolve_source, self.root, name, request, scratch, self._planner(name)
            )
        except ConfigError as exc:
            attempted = await asyncio.to_thread(
                source_fingerprint, self.root, name, self._planner(name)
            )
            self._record_failure(name, old, exc.message, None, attempted)
            raise
        if not source.versions:
            _remove(source.override_dir)
            message = (
                f"model '{name}': no version directory matches its version policy "
                f"(found {source.available or 'none'})"
            )
            self._record_failure(name, old, message, None, source.fingerprint)
            raise ModelLoadError(message)
        keep: dict[int, ServingVersion] = {}
        if only_changed and old is not None and old.override_dir is None:
            keep = {
                n: s
                for n, s in old.versions.items()
                if source.versions.get(n) == s.fingerprint
            }
        todo = [n for n in sorted(source.versions) if n not in keep]
        self._loading[name] = set(todo)
        loaded = [LoadedVersion(name, n, source.path / str(n), source.config) for n in todo]
        for version in loaded:
            await asyncio.to_thread(load_version, version)
        failed = [v for v in loaded if not v.ready]
        if failed and not (partial and old is None):
            await asyncio.to_thread(_unload_all, [v for v in loaded if v.ready])
            _remove(source.override_dir)
            message = "; ".join(v.reason for v in failed)
            self._record_failure(name, old, message, failed, source.fingerprint)
            served = f"; version(s) {sorted(old.versions)} serve on" if old and old.versions else ""
            logger.error(
                "model '%s' not (re)loaded (%s): %s%s",
                name,
                reason,
                message,
                served,
                extra={"event": "load_failed", "model": name, "reason": reason},
            )
            raise ModelLoadError(f"{message}{served}")
        fresh = {v.version: self._serve(v, source) for v in loaded if v.ready}
        view = ModelView(
            name=name,
            path=source.path,
            config=source.config,
            versions={**keep, **fresh},
            failed={v.version: v for v in failed},
            error="" if fresh or keep else "; ".join(v.reason for v in failed),
            fingerprint=source.fingerprint,
            override_dir=source.override_dir,
            pinned=source.default,
        )
        self.views[name] = view  # the swap: new requests resolve to the new versions now
        self._unloaded.discard(name)
        self._changed()
        retired = [s for n, s in (old.versions.items() if old else ()) if keep.get(n) is not s]
        verb = "reloaded" if old is not None and old.versions else "loaded"
        logger.info(
            "%s model '%s' version(s) %s (%s)%s",
            verb,
            name,
            sorted(fresh),
            reason,
            f"; draining version(s) {sorted(s.number for s in retired)}" if retired else "",
            extra={
                "event": "swap" if retired else "load",
                "model": name,
                "versions": sorted(fresh),
                "reason": reason,
            },
        )
        if retired:
            await self._retire(retired)
        if old is not None and old.override_dir not in (None, source.override_dir):
            _remove(old.override_dir)

    def _serve(self, version: LoadedVersion, source: ModelSource) -> ServingVersion:
        stats = VersionStats(histograms=self._histograms)
        observer: BatchObserver = stats.batch_done
        if self._tracer is not None:
            observer = _fan_out(stats.batch_done, self._tracer(version.model, version.version))
        scheduler = build_scheduler(version, observer=observer)
        return ServingVersion(version, scheduler, stats, source.versions[version.version])

    def _record_failure(
        self,
        name: str,
        old: ModelView | None,
        message: str,
        failed: list[LoadedVersion] | None,
        attempted: str,
    ) -> None:
        """Keep what serves; note why the change failed (for the index) and what was tried
        (so that the poll mode retries only once the files change again)."""
        failures = {
            v.version: v for v in failed or () if old is None or v.version not in old.versions
        }
        if old is not None and old.versions:
            self.views[name] = replace(
                old, error=f"reload failed: {message}", failed=failures, attempted=attempted
            )
        else:
            self.views[name] = ModelView(
                name,
                (self.root or Path()) / name,
                None,
                failed=failures,
                error=message,
                fingerprint=attempted,
                attempted=attempted,
            )
        self._changed()

    async def _retire(self, versions: Iterable[ServingVersion]) -> None:
        """Drain each version (no new requests reach it; wait for those it has), then close
        its scheduler and unload it."""
        versions = list(versions)
        for serving in versions:
            serving.draining = True
            if serving.inflight:
                serving.drained = asyncio.Event()
        for serving in versions:
            if serving.drained is not None and serving.inflight:
                try:
                    await asyncio.wait_for(serving.drained.wait(), self._drain_timeout_s)
                except TimeoutError:
                    logger.warning(
                        "model '%s' version %d: %d request(s) still running after %g s; "
                        "unloading anyway",
                        serving.loaded.model,
                        serving.number,
                        serving.inflight,
                        self._drain_timeout_s,
                    )
            serving.scheduler.close()
        await asyncio.to_thread(_unload_all, [s.loaded for s in versions])

    def _scratch_dir(self) -> Path:
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="inferbridge-models-"))
        return self._scratch


def _fan_out(*observers: BatchObserver) -> BatchObserver:
    def observe(batch: BatchTiming) -> None:
        for observer in observers:
            observer(batch)

    return observe


def _unload_all(versions: list[LoadedVersion]) -> None:
    for version in versions:
        try:
            unload_version(version)
        except Exception:  # one runtime failing to unload must not keep the others
            logger.exception(
                "unloading model '%s' version %d failed", version.model, version.version
            )


def _remove(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(path)
