"""Progressive delivery inside the server: shadow, canary, sticky splits, approval gates,
automatic analysis and rollback, with an audit trail (see the README, "Releasing a new
model version").

The controller lives in `inferbridge.release.controller` (it imports the model manager,
which imports the config schema, which imports `release.spec`: this package's top level
stays import-light so that the schema can).
"""

from inferbridge.release.spec import RolloutSpec, parse_duration, parse_rollout

__all__ = ["RolloutSpec", "parse_duration", "parse_rollout"]
