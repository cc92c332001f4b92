"""The loud line a server prints when it can be reached from elsewhere and asks nobody
who they are."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback", "open_server_warning"]


def is_loopback(host: str) -> bool:
    """`host` is a loopback address (or `localhost`); a host name is assumed not to be."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may well resolve to an outside address


def open_server_warning(host: str, *, authenticates: bool) -> str | None:
    """The warning for a listener on `host`, or None when there is nothing to warn of."""
    if authenticates or is_loopback(host):
        return None
    return (
        f"listening on {host} with authentication OFF: anyone who can reach this address "
        "may infer, load and unload models; turn it on with --auth-keys FILE or "
        "--auth-jwt-hs256-secret-file / --auth-jwt-jwks"
    )
