"""`inferbridge rollout ...`: the rollout API of a running server, from the shell."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]

_DEFAULT_URL = "http://127.0.0.1:8000"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rollout = commands.add_parser(
        "rollout", help="start, watch, approve, pause, abort or promote a model's rollout"
    )
    rollout.add_argument(
        "--url",
        default=os.environ.get("INFERBRIDGE_URL", _DEFAULT_URL),
        help=f"the server's REST address (default $INFERBRIDGE_URL or {_DEFAULT_URL}); "
        "$INFERBRIDGE_API_KEY, when set, is sent as the bearer credential",
    )
    rollout.add_argument("--actor", default=os.environ.get("USER", "cli"), help="who acts")
    rollout.add_argument("--json", action="store_true", help="print the API's JSON as is")
    actions = rollout.add_subparsers(dest="action", required=True)

    start = actions.add_parser("start", help="start a rollout from a YAML or JSON spec file")
    start.add_argument("model")
    start.add_argument("spec", type=Path, help="the rollout spec (config.yaml's rollout block)")
    start.add_argument("--candidate", type=int, help="the candidate version (overrides the file)")

    status = actions.add_parser("status", help="step, weights and the last analyses")
    status.add_argument("model", nargs="?", help="one model (default: every rollout)")
    status.add_argument("--windows", type=int, default=5, help="analysis windows to show")

    approve = actions.add_parser("approve", help="approve the approval gate a rollout waits at")
    approve.add_argument("model")
    approve.add_argument("gate")
    approve.add_argument("--comment", default="")

    for name, text in (
        ("pause", "stop advancing (analysis and rollback stay on)"),
        ("resume", "advance again"),
        ("abort", "send all traffic back to the baseline now"),
        ("promote", "make the candidate the default now"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("model")
        if name in ("pause", "abort"):
            action.add_argument("--reason", default="")

    history = actions.add_parser("history", help="the audit log (of one model, or all)")
    history.add_argument("model", nargs="?")
    history.add_argument("--jsonl", action="store_true", help="JSON lines, for export")

    clear = actions.add_parser("clear", help="forget an ended rollout (back to version policy)")
    clear.add_argument("model")


def _credentials() -> dict[str, str]:
    """$INFERBRIDGE_API_KEY (an API key or a JWT) as a bearer credential, for a server
    with authentication on (rollout changes need the admin scope, status read)."""
    credential = os.environ.get("INFERBRIDGE_API_KEY", "").strip()
    return {"authorization": f"Bearer {credential}"} if credential else {}


def run(options: argparse.Namespace) -> int:
    import httpx

    base = options.url.rstrip("/") + "/v1/rollouts"
    action = options.action
    try:
        with httpx.Client(timeout=60.0, headers=_credentials()) as client:
            if action == "start":
                response = client.post(base, json=_start_body(options))
            elif action == "status":
                path = f"{base}/{options.model}" if options.model else base
                response = client.get(path)
            elif action == "approve":
                response = client.post(
                    f"{base}/{options.model}/approve",
                    json={"gate": options.gate, "who": options.actor, "comment": options.comment},
                )
            elif action in ("pause", "resume", "abort", "promote"):
                body: dict[str, Any] = {"actor": options.actor}
                if getattr(options, "reason", ""):
                    body["reason"] = options.reason
                response = client.post(f"{base}/{options.model}/{action}", json=body)
            elif action == "history":
                if options.model:
                    response = client.get(f"{base}/{options.model}/history")
                else:
                    response = client.get(
                        options.url.rstrip("/") + "/v1/rollout-audit",
                        params={"format": "jsonl"} if options.jsonl else None,
                    )
            else:
                response = client.request(
                    "DELETE", f"{base}/{options.model}", json={"actor": options.actor}
                )
    except httpx.HTTPError as exc:
        print(f"inferbridge rollout: cannot reach {options.url}: {exc}", file=sys.stderr)
        return 2
    except _SpecError as exc:
        print(f"inferbridge rollout: {exc}", file=sys.stderr)
        return 2
    if response.status_code >= 400:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        print(f"inferbridge rollout: {response.status_code}: {message}", file=sys.stderr)
        return 1
    if action == "history" and not options.model and options.jsonl:
        sys.stdout.write(response.text)
        return 0
    document = response.json()
    if options.json:
        print(json.dumps(document, indent=2))
    elif action == "history":
        for event in document["events"]:
            print(_event_line(event))
    elif action == "status" and not options.model:
        for rollout in document["rollouts"]:
            print(_status_text(rollout, options.windows))
            print()
        if not document["rollouts"]:
            print("no rollouts")
    elif action == "clear":
        print(f"cleared; model '{options.model}' serves version {document['default_version']}")
    else:
        print(_status_text(document, getattr(options, "windows", 3)))
    return 0


class _SpecError(Exception):
    pass


def _start_body(options: argparse.Namespace) -> dict[str, Any]:
    import yaml

    try:
        document = yaml.safe_load(options.spec.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise _SpecError(f"cannot read {options.spec}: {exc}") from None
    if isinstance(document, dict) and isinstance(document.get("rollout"), dict):
        document = document["rollout"]  # a whole config.yaml
    if not isinstance(document, dict):
        raise _SpecError(f"{options.spec}: expected a mapping (the rollout spec)")
    if options.candidate is not None:
        document["candidate"] = options.candidate
    return {"model": options.model, "actor": options.actor, **document}


def _status_text(status: dict[str, Any], windows: int) -> str:
    weights = ", ".join(f"v{v}: {w:g}%" for v, w in status["weights"].items())
    steps = status["steps"]
    lines = [
        f"model {status['model']}: rollout {status['id']} of version {status['candidate']} "
        f"(baseline {status['baseline']}), {status['phase']}",
        f"  step {min(status['step'] + 1, len(steps))} of {len(steps)}: "
        f"{status['step_description']}",
        f"  weights: {weights}"
        + (f"; shadow sample {status['shadow_sample']:g}" if status.get("shadow_sample") else ""),
        f"  why: {status['message']}",
        f"  analysis: {status['verdicts']['pass']} passed, {status['verdicts']['fail']} failed, "
        f"{status['verdicts']['inconclusive']} inconclusive; "
        f"{status['consecutive_failures']} failure(s) in a row",
    ]
    waiting = status.get("waiting_for")
    if waiting:
        lines.append(
            f"  waiting for gate '{waiting['gate']}': {waiting['approvals']} of "
            f"{waiting['required']} approval(s)"
        )
    for analysis in status["analysis"][:windows]:
        when = time.strftime("%H:%M:%S", time.localtime(analysis["at"]))
        candidate, baseline = analysis["candidate"], analysis["baseline"]
        lines.append(
            f"  {when} {analysis['verdict']:<12} candidate {candidate['requests']} req "
            f"p99 {_ms(candidate['p99_ms'])} errors {sum(candidate['failures'].values())} | "
            f"baseline {baseline['requests']} req p99 {_ms(baseline['p99_ms'])} "
            f"errors {sum(baseline['failures'].values())} | {analysis['why']}"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}ms"


def _event_line(event: dict[str, Any]) -> str:
    detail = {k: v for k, v in event["detail"].items() if k not in ("analysis", "spec")}
    why = event["detail"].get("analysis", {}).get("why")
    extra = f" — analysis: {why}" if why else ""
    return f"{event['time']} {event['model']} {event['event']} by {event['actor']} {detail}{extra}"
