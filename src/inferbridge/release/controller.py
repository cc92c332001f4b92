"""The rollout controller: one reconciling task per active rollout.

Every analysis interval it samples the baseline's and candidate's figures, judges the
window, and moves the rollout on (next step, promote) or back (abort). A transition writes
the new state and its audit record in one store transaction first, then swaps the route
(weights, shadow) the dataplane reads, then asks the model manager for the versions the
rollout needs: the baseline and candidate loaded side by side while it runs, the baseline
pinned as the default after an abort, the candidate after promotion.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from inferbridge.errors import (
    InferBridgeError,
    InvalidInput,
    ModelBusy,
    ModelNotFound,
    StateConflict,
)
from inferbridge.models.source import VersionPlan
from inferbridge.release.analysis import Analysis, CheckResult, Figures, Watch, judge
from inferbridge.release.router import Route
from inferbridge.release.shadow import Shadow, ShadowCounts
from inferbridge.release.spec import (
    AgreementCheck,
    ApprovalStep,
    PrometheusCheck,
    RolloutSpec,
    parse_rollout,
)
from inferbridge.release.state import RolloutState, describe_step, traffic_of
from inferbridge.release.store import RolloutStore
from inferbridge.release.webhooks import Webhooks

if TYPE_CHECKING:
    from inferbridge.dataplane.dataplane import DataPlane
    from inferbridge.models.served import ModelView
    from inferbridge.repository.config import ModelConfig

__all__ = ["RolloutController", "RolloutReport"]

logger = logging.getLogger(__name__)

#: Analyses kept in memory per rollout for `status` (the audit log keeps the decisions).
RECENT_ANALYSES = 20


@dataclass(slots=True)
class _Rollout:
    state: RolloutState
    watch: Watch | None = None
    shadow: Shadow | None = None
    task: asyncio.Task[None] | None = None
    ticking: bool = False  # a tick is running: it may be reloading the model, never cancel it
    analyses: deque[Analysis] = field(default_factory=lambda: deque(maxlen=RECENT_ANALYSES))
    reference: Figures | None = None
    verdicts: dict[str, int] = field(
        default_factory=lambda: {"pass": 0, "fail": 0, "inconclusive": 0}
    )
    shadow_totals: ShadowCounts = field(default_factory=ShadowCounts)


@dataclass(frozen=True, slots=True)
class RolloutReport:
    """One rollout as the metrics collector reads it."""

    model: str
    phase: str
    step: int
    weights: dict[int, float]
    verdicts: dict[str, int]
    shadow: ShadowCounts


class RolloutController:
    """Owns every model's rollout; the REST API and the CLI talk to it."""

    def __init__(
        self,
        dataplane: DataPlane,
        store: RolloutStore,
        *,
        webhooks: Webhooks | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dataplane = dataplane
        self.models = dataplane.models
        self.store = store
        self.webhooks = webhooks or Webhooks()
        self._clock = clock
        self._rollouts: dict[str, _Rollout] = {}
        self._closed = False
        self._background: set[asyncio.Future[None]] = set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- lifecycle -------------------------------------------------------------------------

    def attach(self) -> None:
        """Read the stored rollouts and take part in every model change. Call before the
        start-up load, so that a rollout interrupted by a restart gets its versions back."""
        for document in self.store.load():
            try:
                state = RolloutState.from_json(document)
            except (KeyError, TypeError, ValueError) as exc:
                logger.error("stored rollout of '%s' unreadable: %s", document.get("model"), exc)
                continue
            self._rollouts[state.model] = _Rollout(state)
        self.models.planner = self.plan
        self.models.on_change(self._models_changed)

    async def resume(self) -> None:
        """After the start-up load: route and analyse every rollout that was active."""
        for model, rollout in list(self._rollouts.items()):
            if not rollout.state.active or model not in self.models.views:
                continue  # a model not loaded now resumes its rollout when it loads
            problem = self._versions_problem(rollout.state)
            if problem is not None:
                await self._abort(rollout, f"on restart: {problem}", "server", reload=True)
                continue
            self._audit(rollout, "resumed", "server", {"step": rollout.state.step})
            self._start(rollout)
            logger.info("resumed the rollout of '%s' at step %d", model, rollout.state.step)
        self._models_changed()

    async def _resume_one(self, rollout: _Rollout) -> None:
        """A model whose rollout was interrupted loaded again (explicit model control)."""
        if rollout.task is not None or not rollout.state.active:
            return
        problem = self._versions_problem(rollout.state)
        if problem is not None:
            await self._abort(rollout, f"on load: {problem}", "server", reload=True)
            return
        self._audit(rollout, "resumed", "server", {"step": rollout.state.step})
        self._start(rollout)

    async def close(self) -> None:
        self._closed = True
        for rollout in self._rollouts.values():
            await self._stop(rollout)
        await self.webhooks.close()
        self.store.close()

    # -- what the model manager asks -------------------------------------------------------

    def plan(
        self, model: str, config: ModelConfig, available: list[int], current: int | None
    ) -> VersionPlan | None:
        """The versions a model needs for its rollout (pure: called for fingerprints too)."""
        rollout = self._rollouts.get(model)
        declared = _declared(config)
        if rollout is not None:
            state = rollout.state
            superseded = (
                not state.active and declared is not None and declared.candidate != state.candidate
            )
            if not superseded:
                return _plan_of(state)
        if declared is None or declared.candidate not in available:
            return None
        if current == declared.candidate:
            return None  # already the default: nothing to roll out
        baseline = _baseline(current, declared.candidate, available)
        if baseline is None:
            return None
        return VersionPlan(keep=frozenset({baseline, declared.candidate}), default=baseline)

    def _models_changed(self) -> None:
        """After every change of the served set: abort rollouts whose model went away,
        start the rollouts that a model's config declares."""
        if self._closed:
            return
        views = self.models.views
        for model, rollout in list(self._rollouts.items()):
            view = views.get(model)
            if not rollout.state.active:
                continue
            if rollout.task is not None and (view is None or view.draining):
                self._spawn(
                    self._abort(rollout, "the model is being unloaded", "server", reload=False)
                )
            elif rollout.task is None and view is not None and not view.draining:
                self._spawn(self._resume_one(rollout))
        for model, view in list(views.items()):
            declared = _declared(view.config)
            if declared is None or view.draining:
                continue
            current = self._rollouts.get(model)
            if current is not None and (
                current.state.active or current.state.candidate == declared.candidate
            ):
                continue
            if declared.candidate not in view.versions or view.pinned is None:
                continue
            if view.pinned == declared.candidate:
                continue
            state = RolloutState.new(
                model,
                declared,
                view.pinned,
                "config",
                "declared in the model's config",
            )
            new = _Rollout(state)
            self._rollouts[model] = new
            self._save(new, "started", "config", {"baseline": state.baseline, **_spec(state)})
            self._start(new)

    # -- the API ---------------------------------------------------------------------------

    async def create(self, model: str, document: Any, actor: str) -> dict[str, Any]:
        """Start a rollout from the API; returns its status. Nothing changes on any error."""
        spec = parse_rollout(document)
        view = self._view(model)
        existing = self._rollouts.get(model)
        if existing is not None and existing.state.active:
            raise StateConflict(
                f"model '{model}' has a rollout already (id {existing.state.id}, phase "
                f"{existing.state.phase}): abort or finish it first"
            )
        if view.override_dir is not None:
            raise InvalidInput(
                f"model '{model}' was loaded from files sent in a load request; rollouts "
                "need a model served from the repository directory"
            )
        serving = view.default
        if serving is None:
            raise InvalidInput(f"model '{model}' serves no version to use as the baseline")
        if spec.candidate == serving.number:
            raise InvalidInput(
                f"version {spec.candidate} of model '{model}' is the default already; the "
                "candidate must be another version"
            )
        available = _available(view)
        if spec.candidate not in view.versions and spec.candidate not in available:
            raise InvalidInput(
                f"unknown candidate: model '{model}' has no version {spec.candidate} "
                f"(versions in the repository: {available or 'none'})"
            )
        state = RolloutState.new(model, spec, serving.number, "api", f"started by {actor}")
        rollout = _Rollout(state)
        self._rollouts[model] = rollout
        try:
            await self.models.load(
                model, reason=f"rollout of version {spec.candidate}", only_changed=True
            )
            view = self._view(model)
            if spec.candidate not in view.versions:
                raise InvalidInput(
                    f"candidate version {spec.candidate} of model '{model}' did not load"
                )
        except InferBridgeError as error:
            if existing is not None:
                self._rollouts[model] = existing
            else:
                self._rollouts.pop(model, None)
            with contextlib.suppress(InferBridgeError):
                await self.models.load(model, reason="rollout not started", only_changed=True)
            error.message = f"rollout not started: {error.message}"
            raise
        self._save(rollout, "started", actor, {"baseline": state.baseline, **_spec(state)})
        self._start(rollout)
        return self.status(model)

    def status(self, model: str) -> dict[str, Any]:
        rollout = self._rollout(model)
        state = rollout.state
        sample = traffic_of(state.spec, state.step)[1] if state.active else None
        weight = _weight(state)
        document: dict[str, Any] = {
            **state.to_json(),
            "steps": [describe_step(s) for s in state.spec.steps],
            "step_description": (
                describe_step(state.spec.steps[state.step])
                if state.step < len(state.spec.steps)
                else "done"
            ),
            "weights": {
                str(state.baseline): 100.0 - weight,
                str(state.candidate): weight,
            },
            "shadow_sample": sample,
            "analysis": [a.to_json() for a in reversed(rollout.analyses)],
            "verdicts": dict(rollout.verdicts),
            "shadow": rollout.shadow_totals.to_json(),
        }
        gate = self._waiting_gate(state)
        if gate is not None:
            document["waiting_for"] = {
                "gate": gate.approval.name,
                "approvals": len(state.approvals.get(gate.approval.name, [])),
                "required": gate.approval.approvers,
            }
        return document

    def all(self) -> list[dict[str, Any]]:
        return [self.status(model) for model in sorted(self._rollouts)]

    def history(self, model: str | None = None) -> list[dict[str, Any]]:
        return [record.to_json() for record in self.store.audit(model)]

    async def approve(self, model: str, gate: str, who: str, comment: str) -> dict[str, Any]:
        rollout = self._rollout(model)
        state = rollout.state
        waiting = self._waiting_gate(state)
        if waiting is None or waiting.approval.name != gate:
            now = (
                f"it waits at gate '{waiting.approval.name}'"
                if waiting is not None
                else f"it is at step {state.step} ({self._step_text(state)}), phase {state.phase}"
            )
            raise StateConflict(f"gate '{gate}' of model '{model}' is not waiting: {now}")
        given = state.approvals.setdefault(gate, [])
        if any(a["who"] == who for a in given):
            raise StateConflict(f"{who} approved gate '{gate}' already")
        given.append({"who": who, "comment": comment, "at": self._clock()})
        self._save(rollout, "approved", who, {"gate": gate, "comment": comment})
        await self._progress(rollout)
        return self.status(model)

    async def pause(self, model: str, actor: str, reason: str) -> dict[str, Any]:
        rollout = self._active(model)
        if rollout.state.phase == "paused":
            raise StateConflict(f"the rollout of '{model}' is paused already")
        rollout.state.phase = "paused"
        rollout.state.message = f"paused by {actor}: {reason}" if reason else f"paused by {actor}"
        self._save(rollout, "paused", actor, {"reason": reason})
        return self.status(model)

    async def resume_rollout(self, model: str, actor: str) -> dict[str, Any]:
        rollout = self._active(model)
        if rollout.state.phase != "paused":
            raise StateConflict(f"the rollout of '{model}' is not paused")
        rollout.state.phase = "progressing"
        rollout.state.message = f"resumed by {actor}"
        self._save(rollout, "resumed", actor, {})
        return self.status(model)

    async def abort(self, model: str, actor: str, reason: str) -> dict[str, Any]:
        rollout = self._active(model)
        await self._abort(rollout, reason or f"aborted by {actor}", actor, reload=True)
        return self.status(model)

    async def promote(self, model: str, actor: str) -> dict[str, Any]:
        rollout = self._active(model)
        await self._promote(rollout, actor, f"promoted by {actor} at step {rollout.state.step}")
        return self.status(model)

    async def clear(self, model: str, actor: str) -> dict[str, Any]:
        """Forget an ended rollout: the model goes back to its version policy."""
        rollout = self._rollout(model)
        if rollout.state.active:
            raise StateConflict(f"the rollout of '{model}' is still active: abort it first")
        self._rollouts.pop(model, None)
        self.store.remove(model, rollout.state.id, actor, {"phase": rollout.state.phase})
        await self._reload(model, "rollout cleared")  # waits out a promotion's swap
        view = self.models.views.get(model)
        serving = view.default if view is not None else None
        return {
            "model": model,
            "cleared": rollout.state.id,
            "default_version": serving.number if serving is not None else None,
        }

    def reports(self) -> list[RolloutReport]:
        reports = []
        for model, rollout in sorted(self._rollouts.items()):
            state = rollout.state
            weight = _weight(state)
            reports.append(
                RolloutReport(
                    model,
                    state.phase,
                    state.step,
                    {state.baseline: 100.0 - weight, state.candidate: weight},
                    dict(rollout.verdicts),
                    rollout.shadow_totals,
                )
            )
        return reports

    # -- the loop --------------------------------------------------------------------------

    def _start(self, rollout: _Rollout) -> None:
        self._apply_route(rollout)
        rollout.task = asyncio.ensure_future(self._run(rollout))

    async def _run(self, rollout: _Rollout) -> None:
        loop = asyncio.get_running_loop()
        interval = rollout.state.spec.analysis.interval
        due = loop.time() + interval
        while rollout.state.active and not self._closed:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due += interval
            if loop.time() > due:  # a stalled loop: don't fire a burst of catch-up ticks
                due = loop.time() + interval
            rollout.ticking = True
            try:
                await self._tick(rollout)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad tick must not end the rollout's supervision
                logger.exception("rollout of '%s': analysis failed", rollout.state.model)
            finally:
                rollout.ticking = False

    async def _tick(self, rollout: _Rollout) -> None:
        state = rollout.state
        problem = self._versions_problem(state)
        if problem is not None:
            await self._abort(rollout, problem, "server", reload=True)
            return
        self._ensure_watch(rollout)
        assert rollout.watch is not None
        shadow = rollout.shadow.take() if rollout.shadow is not None else None
        if shadow is not None:
            rollout.shadow_totals.add(shadow)
        rollout.watch.tick(shadow)
        baseline, candidate, shadow_window = rollout.watch.figures()
        spec = state.spec.analysis
        external = await self._external_checks(spec.checks, candidate.requests, spec)
        analysis = judge(
            spec, state.step, baseline, candidate, shadow_window, rollout.reference, external
        )
        rollout.reference = analysis.reference
        rollout.analyses.append(analysis)
        rollout.verdicts[analysis.verdict] += 1
        if analysis.verdict == "fail":
            state.consecutive_failures += 1
            limit = spec.failure_limit
            if state.consecutive_failures >= limit:
                await self._abort(
                    rollout,
                    f"analysis failed {state.consecutive_failures} time(s) in a row "
                    f"(failure_limit {limit}): {analysis.why}",
                    "analysis",
                    reload=True,
                    analysis=analysis,
                )
                return
            state.message = (
                f"analysis failed ({state.consecutive_failures} of {limit}): {analysis.why}"
            )
            self._save(rollout, "analysis_failed", "analysis", {"analysis": analysis.to_json()})
            return
        if analysis.verdict == "pass":
            state.consecutive_failures = 0
            state.step_passes += 1
        await self._progress(rollout, analysis)

    async def _progress(self, rollout: _Rollout, analysis: Analysis | None = None) -> None:
        """Move past the current step if it is done."""
        state = rollout.state
        if state.phase != "progressing":
            return
        step = state.current_step
        if step is None:
            await self._promote(rollout, "controller", "every step passed", analysis)
            return
        elapsed = self._clock() - state.step_started
        if isinstance(step, ApprovalStep):
            gate = step.approval
            given = state.approvals.get(gate.name, [])
            if len(given) >= gate.approvers:
                await self._advance(rollout, ",".join(a["who"] for a in given), analysis)
            elif gate.timeout is not None and elapsed >= gate.timeout:
                await self._abort(
                    rollout,
                    f"approval gate '{gate.name}' timed out after {gate.timeout:g}s with "
                    f"{len(given)} of {gate.approvers} approval(s)",
                    "controller",
                    reload=True,
                    analysis=analysis,
                )
            else:
                state.message = (
                    f"waiting for approval '{gate.name}': {len(given)} of {gate.approvers}"
                )
            return
        duration = step.shadow.duration if hasattr(step, "shadow") else step.canary.duration
        if elapsed < duration:
            state.message = f"{describe_step(step)}: {elapsed:.0f}s of {duration:g}s"
            return
        if state.step_passes == 0 and state.spec.analysis.checks:
            last = rollout.analyses[-1].why if rollout.analyses else "no analysis yet"
            state.message = f"{describe_step(step)}: waiting for a passing analysis ({last})"
            return
        await self._advance(rollout, "controller", analysis)

    async def _advance(self, rollout: _Rollout, actor: str, analysis: Analysis | None) -> None:
        state = rollout.state
        state.step += 1
        state.step_started = self._clock()
        state.step_passes = 0
        if state.step >= len(state.spec.steps):
            await self._promote(rollout, actor, "every step passed", analysis)
            return
        text = describe_step(state.spec.steps[state.step])
        state.message = f"step {state.step}: {text}"
        detail: dict[str, Any] = {"step": state.step, "description": text}
        if analysis is not None:
            detail["analysis"] = analysis.to_json()
        self._save(rollout, "step", actor, detail)
        self._apply_route(rollout)
        await self._progress(rollout, analysis)

    async def _promote(
        self, rollout: _Rollout, actor: str, why: str, analysis: Analysis | None = None
    ) -> None:
        state = rollout.state
        state.phase = "promoted"
        state.ended = self._clock()
        state.message = f"promoted version {state.candidate}: {why}"
        detail: dict[str, Any] = {"why": why}
        if analysis is not None:
            detail["analysis"] = analysis.to_json()
        self._save(rollout, "promoted", actor, detail)
        # The swap first (the candidate becomes the default), then the route goes: requests
        # go to the candidate throughout.
        await self._reload(state.model, f"rollout promoted version {state.candidate}")
        await self._stop(rollout)
        logger.info(
            "rollout of '%s': promoted version %d (%s)",
            state.model,
            state.candidate,
            why,
            extra={"event": "rollout_promoted", "model": state.model},
        )

    async def _abort(
        self,
        rollout: _Rollout,
        why: str,
        actor: str,
        *,
        reload: bool,
        analysis: Analysis | None = None,
    ) -> None:
        state = rollout.state
        if not state.active:
            return
        state.phase = "aborted"
        state.ended = self._clock()
        state.message = f"aborted: {why}"
        state.pin = reload  # a model being unloaded keeps no pin for a later load
        self.dataplane.routes.pop(state.model, None)  # traffic back to the baseline at once
        detail: dict[str, Any] = {"why": why, "candidate": state.spec.on_abort}
        if analysis is not None:
            detail["analysis"] = analysis.to_json()
        self._save(rollout, "aborted", actor, detail)
        await self._stop(rollout)
        logger.warning(
            "rollout of '%s': aborted, version %d serves (%s)",
            state.model,
            state.baseline,
            why,
            extra={"event": "rollout_aborted", "model": state.model},
        )
        if reload:
            await self._reload(state.model, f"rollout of version {state.candidate} aborted")

    async def _reload(self, model: str, reason: str) -> None:
        if model not in self.models.views:
            return
        for _ in range(50):  # another change of the model may be running: wait for it
            try:
                await self.models.load(model, reason=reason, only_changed=True)
                return
            except InferBridgeError as exc:
                if not isinstance(exc, ModelBusy):
                    logger.error("rollout of '%s': %s: %s", model, reason, exc.message)
                    return
                await asyncio.sleep(0.1)

    async def _stop(self, rollout: _Rollout) -> None:
        task, rollout.task = rollout.task, None
        if task is not None and task is not asyncio.current_task():
            if rollout.ticking and not self._closed:
                # Mid-tick (maybe inside a reload of the model): let it finish; the loop
                # ends by itself once the rollout is no longer active.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(task)
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not rollout.state.active or self._closed:
            self.dataplane.routes.pop(rollout.state.model, None)
        if rollout.shadow is not None:
            rollout.shadow_totals.add(rollout.shadow.take())
            await rollout.shadow.close()
            rollout.shadow = None
        if rollout.watch is not None:
            rollout.watch.close()
            rollout.watch = None

    # -- helpers ---------------------------------------------------------------------------

    def _apply_route(self, rollout: _Rollout) -> None:
        state = rollout.state
        spec = state.spec
        weight, sample = traffic_of(spec, state.step)
        shadow = rollout.shadow
        if sample is None:
            if shadow is not None:
                rollout.shadow_totals.add(shadow.take())
                self._spawn(shadow.close())
            rollout.shadow = shadow = None
        elif shadow is None or shadow.sample != sample:
            tolerance = next(
                (c.agreement for c in spec.analysis.checks if isinstance(c, AgreementCheck)), None
            )
            fresh = Shadow(
                state.candidate,
                sample,
                limit=spec.shadow_queue,
                atol=tolerance.atol if tolerance is not None else 1e-5,
                rtol=tolerance.rtol if tolerance is not None else 1e-4,
            )
            if shadow is not None:  # keep the window's comparisons
                fresh.counts = shadow.take()
                self._spawn(shadow.close())
            rollout.shadow = shadow = fresh
        self.dataplane.routes[state.model] = Route.of(
            state.model,
            state.baseline,
            state.candidate,
            weight,
            header=spec.route_header,
            parameter=spec.route_parameter,
            shadow=shadow,
        )
        self._ensure_watch(rollout)

    def _ensure_watch(self, rollout: _Rollout) -> None:
        if rollout.watch is not None:
            return
        view = self.models.views.get(rollout.state.model)
        if view is None:
            return
        baseline = view.versions.get(rollout.state.baseline)
        candidate = view.versions.get(rollout.state.candidate)
        rollout.watch = Watch(
            baseline.stats if baseline is not None else None,
            candidate.stats if candidate is not None else None,
            rollout.state.spec.analysis,
        )

    async def _external_checks(
        self, checks: tuple[Any, ...], requests: int, spec: Any
    ) -> dict[int, CheckResult]:
        results: dict[int, CheckResult] = {}
        for index, check in enumerate(checks):
            if isinstance(check, PrometheusCheck) and requests >= spec.min_requests:
                from inferbridge.release.prometheus import query_check

                results[index] = await query_check(check.prometheus)
        return results

    def _versions_problem(self, state: RolloutState) -> str | None:
        view = self.models.views.get(state.model)
        if view is None:
            return "the model is not loaded"
        for role, number in (("baseline", state.baseline), ("candidate", state.candidate)):
            if number not in view.versions:
                failed = view.failed.get(number)
                why = f": {failed.reason}" if failed is not None else ""
                return f"the {role} (version {number}) is not loaded{why}"
        return None

    def _waiting_gate(self, state: RolloutState) -> ApprovalStep | None:
        step = state.current_step
        if state.active and isinstance(step, ApprovalStep):
            return step
        return None

    def _step_text(self, state: RolloutState) -> str:
        step = state.current_step
        return describe_step(step) if step is not None else "done"

    def _view(self, model: str) -> ModelView:
        view = self.models.views.get(model)
        if view is None:
            raise ModelNotFound(f"model '{model}' is not loaded")
        return view

    def _rollout(self, model: str) -> _Rollout:
        rollout = self._rollouts.get(model)
        if rollout is None:
            raise ModelNotFound(f"model '{model}' has no rollout")
        return rollout

    def _active(self, model: str) -> _Rollout:
        rollout = self._rollout(model)
        if not rollout.state.active:
            raise StateConflict(
                f"the rollout of '{model}' has ended ({rollout.state.phase}): "
                f"{rollout.state.message}"
            )
        return rollout

    def _save(self, rollout: _Rollout, event: str, actor: str, detail: dict[str, Any]) -> None:
        state = rollout.state
        weight = _weight(state)
        record = self.store.save(
            state.to_json(),
            event,
            actor,
            {**detail, "phase": state.phase, "step": state.step, "weight": weight},
        )
        self.webhooks.send(
            state.spec.webhooks,
            {
                "event": event,
                "model": state.model,
                "rollout": state.id,
                "baseline": state.baseline,
                "candidate": state.candidate,
                "phase": state.phase,
                "step": state.step,
                "weight": weight,
                "actor": actor,
                "message": state.message,
                "at": record.at,
            },
        )

    def _audit(self, rollout: _Rollout, event: str, actor: str, detail: dict[str, Any]) -> None:
        self.store.record(rollout.state.model, rollout.state.id, event, actor, detail)


def _weight(state: RolloutState) -> float:
    """The candidate's share of unversioned requests now."""
    if state.active:
        return traffic_of(state.spec, state.step)[0]
    return 100.0 if state.phase == "promoted" else 0.0


def _declared(config: ModelConfig | None) -> RolloutSpec | None:
    if config is None:
        return None
    declared = getattr(config, "rollout", None)
    return declared if isinstance(declared, RolloutSpec) else None


def _plan_of(state: RolloutState) -> VersionPlan | None:
    if state.active:
        return VersionPlan(
            keep=frozenset({state.baseline, state.candidate}), default=state.baseline
        )
    if not state.pin:
        return None
    if state.phase == "promoted":
        return VersionPlan(keep=frozenset({state.candidate}), default=state.candidate)
    if state.spec.on_abort == "keep":
        return VersionPlan(
            keep=frozenset({state.baseline, state.candidate}), default=state.baseline
        )
    return VersionPlan(
        keep=frozenset({state.baseline}),
        exclude=frozenset({state.candidate}),
        default=state.baseline,
    )


def _baseline(current: int | None, candidate: int, available: list[int]) -> int | None:
    if current is not None and current != candidate:
        return current
    others = [v for v in available if v != candidate]
    return max(others) if others else None


def _available(view: ModelView) -> list[int]:
    try:
        return sorted(int(p.name) for p in view.path.iterdir() if p.is_dir() and p.name.isdigit())
    except OSError:
        return []


def _spec(state: RolloutState) -> dict[str, Any]:
    return {"candidate": state.candidate, "spec": state.spec.model_dump(mode="json")}
