"""A rollout's durable state: what the store keeps and a restarted server resumes from."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from inferbridge.release.spec import ApprovalStep, CanaryStep, RolloutSpec, ShadowStep, Step

__all__ = ["ACTIVE", "RolloutState", "describe_step", "traffic_of"]

#: Phases in which the rollout routes traffic and runs its analysis.
ACTIVE = frozenset({"progressing", "paused"})


@dataclass(slots=True)
class RolloutState:
    id: str
    model: str
    spec: RolloutSpec
    baseline: int
    candidate: int
    source: str  # "config" (the model's config.yaml) or "api"
    phase: str = "progressing"  # progressing, paused, aborted, promoted
    step: int = 0
    started: float = field(default_factory=time.time)
    step_started: float = field(default_factory=time.time)
    ended: float | None = None
    consecutive_failures: int = 0
    step_passes: int = 0
    approvals: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    message: str = ""
    #: Whether the model stays pinned after the rollout ended (to the baseline after an
    #: abort, to the candidate after promotion), so no reload changes which version answers.
    pin: bool = True

    @classmethod
    def new(
        cls, model: str, spec: RolloutSpec, baseline: int, source: str, message: str
    ) -> RolloutState:
        return cls(
            id=uuid.uuid4().hex[:12],
            model=model,
            spec=spec,
            baseline=baseline,
            candidate=spec.candidate,
            source=source,
            message=message,
        )

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    @property
    def current_step(self) -> Step | None:
        return self.spec.steps[self.step] if self.step < len(self.spec.steps) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "spec": self.spec.model_dump(mode="json", exclude_none=True),
            "baseline": self.baseline,
            "candidate": self.candidate,
            "source": self.source,
            "phase": self.phase,
            "step": self.step,
            "started": self.started,
            "step_started": self.step_started,
            "ended": self.ended,
            "consecutive_failures": self.consecutive_failures,
            "step_passes": self.step_passes,
            "approvals": self.approvals,
            "message": self.message,
            "pin": self.pin,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> RolloutState:
        return cls(
            id=document["id"],
            model=document["model"],
            spec=RolloutSpec.model_validate(document["spec"]),
            baseline=int(document["baseline"]),
            candidate=int(document["candidate"]),
            source=document.get("source", "api"),
            phase=document["phase"],
            step=int(document["step"]),
            started=float(document["started"]),
            step_started=float(document["step_started"]),
            ended=document.get("ended"),
            consecutive_failures=int(document.get("consecutive_failures", 0)),
            step_passes=int(document.get("step_passes", 0)),
            approvals=dict(document.get("approvals", {})),
            message=document.get("message", ""),
            pin=bool(document.get("pin", True)),
        )


def traffic_of(spec: RolloutSpec, step: int) -> tuple[float, float | None]:
    """(candidate weight, shadow sample or None) while at `step`: an approval gate holds the
    traffic of the step before it; past the last step, everything goes to the candidate."""
    if step >= len(spec.steps):
        return 100.0, None
    for index in range(step, -1, -1):
        current = spec.steps[index]
        if isinstance(current, CanaryStep):
            return current.canary.weight, None
        if isinstance(current, ShadowStep):
            return 0.0, current.shadow.sample
    return 0.0, None


def describe_step(step: Step) -> str:
    if isinstance(step, ShadowStep):
        return f"shadow (sample {step.shadow.sample:g}) for {step.shadow.duration:g}s"
    if isinstance(step, CanaryStep):
        return f"canary weight {step.canary.weight:g} for {step.canary.duration:g}s"
    assert isinstance(step, ApprovalStep)
    return f"approval '{step.approval.name}' ({step.approval.approvers} approver(s))"
