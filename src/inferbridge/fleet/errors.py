"""The fleet's domain errors; the API maps each to one HTTP status."""

from __future__ import annotations

__all__ = [
    "Conflict",
    "FleetError",
    "Forbidden",
    "InvalidSpec",
    "NotFound",
    "Unauthorized",
    "Unavailable",
]


class FleetError(Exception):
    """Base of the errors the control plane reports to a client; `message` is shown as is."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidSpec(FleetError):
    """A deployment, manifest, rollout or registration is malformed: 400."""

    status = 400


class Unauthorized(FleetError):
    """A missing or wrong token: 401."""

    status = 401


class Forbidden(FleetError):
    """An authenticated caller that may not do this (another principal's node): 403."""

    status = 403


class NotFound(FleetError):
    """An unknown node, deployment, artefact or rollout: 404."""

    status = 404


class Conflict(FleetError):
    """The change contradicts the current state (a rollout already running): 409."""

    status = 409


class Unavailable(FleetError):
    """A node did not answer a diagnostic request in time, or this replica is not the
    leader: 503."""

    status = 503
