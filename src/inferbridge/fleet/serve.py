"""Run the control plane: `inferbridge fleet serve --store sqlite:PATH`."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sys
from typing import TYPE_CHECKING

from inferbridge.fleet.gcpolicy import GcController, GcPolicy

if TYPE_CHECKING:
    from inferbridge.security import AuthConfig

__all__ = ["serve"]

logger = logging.getLogger(__name__)


def serve(
    store_url: str,
    *,
    host: str,
    port: int,
    admin_token: str | None,
    bootstrap_token: str | None,
    missed_heartbeats: int = 3,
    advertise_url: str | None = None,
    placement: str = "spread",
    auth: AuthConfig | None = None,
    gc_policy: GcPolicy | None = None,
    server_down_grace_s: float | None = None,
    server_settle_s: float | None = None,
) -> int:
    """Run until stopped; `auth` (authenticating: a keys file or a JWT verifier) replaces
    the admin and bootstrap tokens with the scopes of docs/security.md; `gc_policy` (default
    GcPolicy()) says how Python's garbage collector runs (fleet.gcpolicy);
    `server_down_grace_s` and `server_settle_s` are ControlPlane's (None: its defaults)."""
    import uvicorn

    from inferbridge.fleet.api import FleetApp
    from inferbridge.fleet.controlplane import ControlPlane
    from inferbridge.fleet.errors import FleetError
    from inferbridge.fleet.store import open_store

    policy = None
    if placement != "spread":
        from inferbridge.placement.fleet import EnginePlacementPolicy
        from inferbridge.placement.policies import policy_names

        if placement not in policy_names():
            known = ", ".join(["spread", *policy_names()])
            print(f"inferbridge: --placement {placement!r}: one of {known}", file=sys.stderr)
            return 2
        policy = EnginePlacementPolicy(placement)
    # httpx logs every request at INFO: the etcd store makes many.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        store = open_store(store_url)
    except FleetError as exc:
        print(f"inferbridge: {exc.message}", file=sys.stderr)
        return 2
    authority = None
    if auth is not None and auth.authenticates:
        from inferbridge.security import AuthConfigError, Authority

        try:
            authority = Authority(auth)
        except AuthConfigError as exc:
            print(f"inferbridge: {exc}", file=sys.stderr)
            return 2
    if authority is not None and authority.enabled:
        if admin_token or bootstrap_token:
            # Ignoring them is the safe side: a token alone grants nothing now.
            print(
                "inferbridge: authentication is on (--auth-keys / --auth-jwt-*): the admin "
                "and bootstrap tokens are not accepted; use API keys or JWTs with scopes "
                "read, admin, agent",
                file=sys.stderr,
                flush=True,
            )
        admin_token = bootstrap_token = None
    else:
        if not admin_token:
            admin_token = secrets.token_urlsafe(24)
            print(f"inferbridge: fleet admin token (generated): {admin_token}", flush=True)
        if not bootstrap_token:
            bootstrap_token = secrets.token_urlsafe(24)
            print(f"inferbridge: fleet bootstrap token (generated): {bootstrap_token}", flush=True)

    collector = GcController(gc_policy or GcPolicy())

    async def main() -> None:
        from inferbridge.fleet.etcd import EtcdStore, Leadership
        from inferbridge.fleet.replication import Replication

        leadership = replication = None
        if isinstance(store, EtcdStore):
            leadership = Leadership(store, advertise_url or f"http://{host}:{port}")
            replication = Replication(store)
        plane = ControlPlane(
            store,
            admin_token=admin_token,
            bootstrap_token=bootstrap_token,
            missed_heartbeats=missed_heartbeats,
            leadership=leadership,
            replicator=replication,
            policy=policy,
            server_down_grace_s=server_down_grace_s,
            server_settle_s=server_settle_s,
        )
        config = uvicorn.Config(
            FleetApp(plane, authority),
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_keep_alive=60,
            # Long polls would hold a shutdown for their whole wait.
            timeout_graceful_shutdown=2,
            backlog=4096,
            # Nothing reads the client's address; its middleware was ~3 % of a heartbeat's
            # samples (py-spy, 1,000 agents).
            proxy_headers=False,
        )
        server = uvicorn.Server(config)
        tasks: list[asyncio.Task[None]] = []
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            # The lifespan has read the state: what is alive now is long-lived.
            collector.started()
            tasks.append(asyncio.create_task(collector.run(), name="fleet-gc"))
            for sock in server.servers[0].sockets if server.servers else []:
                address = sock.getsockname()
                print(
                    f"inferbridge: fleet control plane listening on http://{address[0]}:{address[1]}",
                    flush=True,
                )
        # uvicorn waits for open requests before it shuts the application down: answer
        # the long polls as soon as the shutdown begins.
        while not task.done():
            if server.should_exit:
                plane.close_polls()
                break
            await asyncio.sleep(0.1)
        for extra in tasks:
            extra.cancel()
        # Now, not after `await task`: uvicorn re-raises the SIGTERM it caught once it is
        # done, which ends the process there.
        print(f"inferbridge: fleet gc: {json.dumps(collector.summary())}", flush=True)
        await task

    collector.apply()
    try:
        asyncio.run(main())
    finally:
        collector.close()
    return 0
