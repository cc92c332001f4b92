"""The operator's side of deployments and rollouts: whether a deployment may be applied,
and the document that starts a rollout. Advancing a running rollout wave by wave is the
reconciler's (`reconciler.reconcile_steps`)."""

from __future__ import annotations

from typing import Any

from inferbridge.fleet.errors import Conflict, NotFound
from inferbridge.fleet.spec import DeploymentSpec, RolloutSpec
from inferbridge.fleet.state import FleetState

__all__ = ["check_deployable", "new_rollout"]


def check_deployable(state: FleetState, spec: DeploymentSpec) -> None:
    """Its artefact is pushed, and no rollout of another version is running."""
    if f"{spec.model}/{spec.version}" not in state.artifacts:
        raise NotFound(
            f"no artefact for {spec.model} version {spec.version}: push it first "
            f"(inferbridge fleet push models/{spec.model} --version {spec.version} --to s3://...)"
        )
    rollout = state.rollouts.get(spec.model)
    current = state.deployments.get(spec.model)
    if (
        rollout is not None
        and rollout.get("state") == "Running"
        and current is not None
        and current.version != spec.version
    ):
        raise Conflict(
            f"a rollout of {spec.model} to version {rollout['version']} is running; "
            "wait for it to finish before deploying another version"
        )


def new_rollout(state: FleetState, spec: RolloutSpec, now: float) -> dict[str, Any]:
    """The document of a rollout starting now over the nodes that serve the model."""
    deployment = state.deployments.get(spec.model)
    if deployment is None:
        raise NotFound(f"no deployment {spec.model!r}: deploy it before rolling out")
    if f"{spec.model}/{spec.version}" not in state.artifacts:
        raise NotFound(f"no artefact for {spec.model} version {spec.version}: push it first")
    if deployment.version == spec.version:
        raise Conflict(f"{spec.model} is at version {spec.version} already")
    running = state.rollouts.get(spec.model)
    if running is not None and running.get("state") == "Running":
        raise Conflict(f"a rollout of {spec.model} to version {running['version']} is running")
    hosts = sorted(n for n, models in state.assignments.items() if spec.model in models)
    if not hosts:
        raise Conflict(f"no node serves {spec.model} yet (status says why)")
    return {
        **spec.model_dump(),
        "from_version": deployment.version,
        "nodes": hosts,
        "wave": 0,
        "wave_started": now,
        "started": now,
        "healthy_since": {},
        "state": "Running",
        "reason": "",
    }
