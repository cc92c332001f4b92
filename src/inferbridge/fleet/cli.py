"""`inferbridge fleet ...`: run the control plane and the agent, push artefacts, deploy,
roll out, and look at the fleet."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import orjson

__all__ = ["register", "run"]

_DEFAULT_URL = "http://127.0.0.1:9000"


def register(commands: Any) -> None:
    """Add the `fleet` command group to the top-level subparsers."""
    fleet = commands.add_parser("fleet", help="the fleet: control plane, agents, deployments")
    sub = fleet.add_subparsers(dest="fleet_command", required=True)

    serve = sub.add_parser("serve", help="run the control plane")
    serve.add_argument(
        "--store", default="sqlite:fleet.db", help="sqlite:PATH (default) or etcd:URL,URL,..."
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=9000, help="listen port (0 = any free)")
    serve.add_argument("--admin-token", default=os.environ.get("INFERBRIDGE_FLEET_ADMIN_TOKEN"))
    serve.add_argument(
        "--bootstrap-token", default=os.environ.get("INFERBRIDGE_FLEET_BOOTSTRAP_TOKEN")
    )
    serve.add_argument(
        "--missed-heartbeats", type=int, default=3, help="heartbeats missed before NotReady"
    )
    serve.add_argument(
        "--placement",
        default="spread",
        help="spread (the simple capacity-aware policy, default) or a policy of the placement "
        "engine (inferbridge.placement: fgd, fgd-plus, best-fit, ...)",
    )
    serve.add_argument(
        "--advertise-url", help="this replica's URL, as the leader's name (etcd stores)"
    )
    serve.add_argument(
        "--server-down-grace",
        type=_period,
        default=None,
        metavar="SECONDS",
        help="how long a node's server may report not live/ready (its agent heartbeating) "
        "before the node's replicas are placed elsewhere (default "
        "$INFERBRIDGE_FLEET_SERVER_DOWN_GRACE_S, else 30)",
    )
    serve.add_argument(
        "--server-settle",
        type=_period,
        default=None,
        metavar="SECONDS",
        help="how long a recovered server must stay up before its node takes replicas again "
        "(default $INFERBRIDGE_FLEET_SERVER_SETTLE_S, else 10)",
    )
    serve.add_argument("--log-level", default="info")
    _gc_options(serve)
    _auth_options(serve)

    agent = sub.add_parser(
        "agent", help="run the node agent (builds it once); arguments go to inferbridge-agent"
    )
    agent.add_argument("agent_args", nargs=argparse.REMAINDER)
    sub.add_parser("build-agent", help="build the node agent and print its path")

    push = sub.add_parser("push", help="upload a model version and its manifest")
    push.add_argument("model_dir", type=Path)
    push.add_argument("--version", type=int, required=True)
    push.add_argument("--to", required=True, help="s3://bucket[/prefix] or a directory")
    push.add_argument("--s3-endpoint", default=os.environ.get("INFERBRIDGE_S3_ENDPOINT"))
    push.add_argument(
        "--no-register", action="store_true", help="do not register the manifest with the fleet"
    )
    _client_options(push)

    deploy = sub.add_parser("deploy", help="declare a model version on the fleet")
    deploy.add_argument("model")
    deploy.add_argument("--version", type=int, required=True)
    deploy.add_argument("--replicas", default="1", help="a number, or 'all' matching nodes")
    deploy.add_argument("--selector", default="", help="label=value,... nodes must have")
    deploy.add_argument(
        "--resources", default="", help="cpu=500m,memory=256Mi,gpu=0.25,gpu_type=T4"
    )
    _client_options(deploy)

    undeploy = sub.add_parser("undeploy", help="remove a deployment (its nodes unload it)")
    undeploy.add_argument("model")
    _client_options(undeploy)

    apply = sub.add_parser("apply", help="apply a directory of YAML/JSON deployments")
    apply.add_argument("-f", "--filename", type=Path, required=True)
    _client_options(apply)

    rollout = sub.add_parser("rollout", help="roll a new version out in waves")
    rollout.add_argument("model")
    rollout.add_argument("--version", type=int, required=True)
    rollout.add_argument(
        "--waves", default="100%", help="cumulative percentages, e.g. 10%%,50%%,100%%"
    )
    rollout.add_argument(
        "--health-gate", default="60s", help="how long each wave must stay healthy"
    )
    rollout.add_argument(
        "--wave-timeout", default="10m", help="how long a wave may take to get ready"
    )
    rollout.add_argument(
        "--max-error-rate",
        type=float,
        help="in-server analysis: the most of the new version's requests that may fail "
        "during a wave's gate (e.g. 0.01); judged from the nodes' per-version statistics",
    )
    rollout.add_argument(
        "--max-latency-ratio",
        type=float,
        help="in-server analysis: the new version's mean latency at most this many times "
        "the old version's on the same nodes",
    )
    rollout.add_argument(
        "--max-latency-ms", type=float, help="in-server analysis: a bound on the mean latency"
    )
    rollout.add_argument(
        "--min-requests",
        type=int,
        default=20,
        help="in-server analysis: requests a wave needs before it is judged (default 20)",
    )
    rollout.add_argument("--wait", action="store_true", help="wait for the rollout to finish")
    _client_options(rollout)

    for name, text in (("nodes", "list the nodes"), ("status", "deployments and rollouts")):
        command = sub.add_parser(name, help=text)
        _client_options(command)
    routing = sub.add_parser("routing", help="which nodes serve which model versions")
    _client_options(routing)
    logs = sub.add_parser("logs", help="the last lines of a node's server log")
    logs.add_argument("node")
    logs.add_argument("--lines", type=int, default=200)
    _client_options(logs)
    diagnose = sub.add_parser("diagnose", help="a node's server, repository, health and disk")
    diagnose.add_argument("node")
    _client_options(diagnose)


def _auth_options(parser: argparse.ArgumentParser) -> None:
    """docs/security.md's authentication flags (environment: INFERBRIDGE_AUTH_*)."""
    env = os.environ.get
    group = parser.add_argument_group(
        "authentication (docs/security.md; replaces the admin and bootstrap tokens)"
    )
    group.add_argument(
        "--auth-keys", default=env("INFERBRIDGE_AUTH_KEYS"), help="API keys file (YAML)"
    )
    group.add_argument(
        "--auth-jwt-hs256-secret-file",
        default=env("INFERBRIDGE_AUTH_JWT_HS256_SECRET_FILE"),
        help="JWTs signed HS256 with this secret (at least 32 bytes)",
    )
    group.add_argument(
        "--auth-jwt-jwks",
        default=env("INFERBRIDGE_AUTH_JWT_JWKS"),
        help="JWTs signed RS256 / ES256 by a key of this JWKS file",
    )
    group.add_argument("--auth-jwt-issuer", default=env("INFERBRIDGE_AUTH_JWT_ISSUER"))
    group.add_argument("--auth-jwt-audience", default=env("INFERBRIDGE_AUTH_JWT_AUDIENCE"))
    group.add_argument(
        "--auth-jwt-leeway-s",
        type=float,
        default=env("INFERBRIDGE_AUTH_JWT_LEEWAY_S", "30"),  # argparse applies type=
        help="clock skew allowed on exp / nbf (default 30, at most 300)",
    )
    group.add_argument(
        "--auth-open-health",
        action=argparse.BooleanOptionalAction,
        default=env("INFERBRIDGE_AUTH_OPEN_HEALTH", "true").lower() not in ("0", "false", "no"),
        help="GET /v1/fleet/health without credentials (default on)",
    )
    group.add_argument(
        "--auth-default-rate",
        default=env("INFERBRIDGE_AUTH_DEFAULT_RATE"),
        help="RPS[:BURST] of a principal without a rate of its own",
    )


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--control-plane",
        default=os.environ.get("INFERBRIDGE_FLEET_URL", _DEFAULT_URL),
        help=f"the control plane's URL (default $INFERBRIDGE_FLEET_URL or {_DEFAULT_URL})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("INFERBRIDGE_FLEET_TOKEN"),
        help="the admin token (default $INFERBRIDGE_FLEET_TOKEN)",
    )
    parser.add_argument(
        "--api-key-file",
        type=Path,
        help="an API key for a control plane with --auth-keys (default $INFERBRIDGE_API_KEY); "
        "sent as x-api-key instead of the token",
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON answer")


class _CliError(Exception):
    pass


def run(options: argparse.Namespace) -> int:
    command = options.fleet_command
    try:
        if command == "serve":
            return _serve(options)
        if command in ("agent", "build-agent"):
            return _agent(options)
        return _COMMANDS[command](options)
    except _CliError as exc:
        print(f"inferbridge: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        from inferbridge.fleet.errors import FleetError

        if isinstance(exc, FleetError):
            print(f"inferbridge: {exc.message}", file=sys.stderr)
            return 2
        import httpx

        if isinstance(exc, httpx.HTTPError):
            print(f"inferbridge: control plane unreachable: {exc}", file=sys.stderr)
            return 1
        raise


def _gc_options(serve: argparse.ArgumentParser) -> None:
    from inferbridge.fleet.gcpolicy import GC_MODES, GcPolicy

    default = GcPolicy()
    serve.add_argument(
        "--gc",
        choices=GC_MODES,
        default=os.environ.get("INFERBRIDGE_FLEET_GC", default.mode),
        help=f"how Python's garbage collector runs: python (as it is), freeze (the state "
        f"left by start-up), freeze-each-full (also after every full collection), scheduled "
        f"(freeze, and full collections only every --gc-full-every); default {default.mode} "
        f"(docs/fleet.md, 'Garbage collection')",
    )
    serve.add_argument(
        "--gc-thresholds",
        default=os.environ.get("INFERBRIDGE_FLEET_GC_THRESHOLDS", ""),
        help="G0,G1,G2 for gc.set_threshold (default: Python's, 700,10,10; scheduled replaces G2)",
    )
    serve.add_argument(
        "--gc-full-every",
        default=os.environ.get("INFERBRIDGE_FLEET_GC_FULL_EVERY", f"{default.full_every_s:g}"),
        help="with --gc scheduled or freeze-each-full: a full collection of everything every "
        f"this many seconds, so every reference cycle is collected (default "
        f"{default.full_every_s:g}; 0 = never, freeze-each-full only)",
    )


def _period(raw: str) -> float:
    """A number of seconds between 0 and a day, for argparse."""
    try:
        seconds = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {raw!r}") from None
    if not 0 <= seconds <= 86400:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected 0 to 86400 seconds, not {raw!r}")
    return seconds


def _serve(options: argparse.Namespace) -> int:
    from inferbridge.fleet.gcpolicy import GcPolicy, GcPolicyError
    from inferbridge.fleet.serve import serve
    from inferbridge.observability.logs import configure_logging
    from inferbridge.security import AuthConfig, AuthConfigError

    configure_logging(options.log_level, "text")
    try:
        auth = AuthConfig.from_settings(options)
    except AuthConfigError as exc:
        raise _CliError(str(exc)) from None
    try:
        gc_policy = GcPolicy.parse(options.gc, options.gc_thresholds, options.gc_full_every)
    except GcPolicyError as exc:
        raise _CliError(str(exc)) from None
    return serve(
        options.store,
        host=options.host,
        port=options.port,
        admin_token=options.admin_token,
        bootstrap_token=options.bootstrap_token,
        missed_heartbeats=options.missed_heartbeats,
        advertise_url=options.advertise_url,
        placement=options.placement,
        auth=auth,
        gc_policy=gc_policy,
        server_down_grace_s=options.server_down_grace,
        server_settle_s=options.server_settle,
    )


def _agent(options: argparse.Namespace) -> int:
    from inferbridge.fleet.agent_build import AgentBuildError, build_agent

    try:
        binary = build_agent()
    except AgentBuildError as exc:
        raise _CliError(str(exc)) from None
    if options.fleet_command == "build-agent":
        print(binary)
        return 0
    args = [a for a in options.agent_args if a != "--"]
    os.execv(binary, [str(binary), *args])


def _call(
    options: argparse.Namespace, method: str, path: str, body: Any = None, **params: Any
) -> Any:
    import httpx

    headers = _credential_headers(options)
    response = httpx.request(
        method,
        options.control_plane.rstrip("/") + path,
        content=None if body is None else orjson.dumps(body),
        headers={**headers, "content-type": "application/json"},
        params=params or None,
        timeout=60,
    )
    try:
        payload = response.json()
    except ValueError:
        payload = {"error": response.text}
    leader = payload.get("leader") if isinstance(payload, dict) else None
    if response.status_code == 503 and leader and leader != options.control_plane:
        # A follower replica names the leader: ask it instead.
        return _call(
            argparse.Namespace(**{**vars(options), "control_plane": leader}),
            method,
            path,
            body,
            **params,
        )
    if response.status_code >= 400:
        raise _CliError(f"{payload.get('error', response.text)} (HTTP {response.status_code})")
    return payload


def _credential_headers(options: argparse.Namespace) -> dict[str, str]:
    """An API key (--api-key-file, else $INFERBRIDGE_API_KEY) as x-api-key, else the admin
    token as a bearer: never both, since a control plane with --auth-keys lets the
    Authorization header decide."""
    key = os.environ.get("INFERBRIDGE_API_KEY", "")
    path: Path | None = getattr(options, "api_key_file", None)
    if path is not None:
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise _CliError(f"--api-key-file {path}: {exc.strerror or exc}") from None
        if not key:
            raise _CliError(f"--api-key-file {path}: the file is empty; expected an API key")
    if key:
        return {"x-api-key": key}
    return {"authorization": f"Bearer {options.token}"} if options.token else {}


def _print(options: argparse.Namespace, payload: Any) -> None:
    print(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())


def _push(options: argparse.Namespace) -> int:
    from inferbridge.fleet.push import push

    manifest = push(options.model_dir, options.version, options.to, s3_endpoint=options.s3_endpoint)
    print(f"pushed {manifest.model} version {manifest.version}: {manifest.uri}")
    print(f"  sha256 {manifest.sha256}, {manifest.size} bytes, {len(manifest.files)} file(s)")
    if not options.no_register:
        _call(options, "POST", "/v1/fleet/artifacts", manifest.model_dump())
        print(f"  registered with {options.control_plane}")
    return 0


def _replicas(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise _CliError(f"--replicas {text!r}: a number or 'all'") from None


def _deploy(options: argparse.Namespace) -> int:
    body = {
        "model": options.model,
        "version": options.version,
        "replicas": _replicas(options.replicas),
        "selector": options.selector,
        "resources": options.resources,
    }
    answer = _call(options, "PUT", f"/v1/fleet/deployments/{options.model}", body)
    if options.json:
        _print(options, answer)
    else:
        print(
            f"deployment {options.model}: version {options.version}, replicas {answer['replicas']}"
        )
    return 0


def _undeploy(options: argparse.Namespace) -> int:
    _call(options, "DELETE", f"/v1/fleet/deployments/{options.model}")
    print(f"deployment {options.model} removed")
    return 0


def _read_deployments(path: Path) -> list[dict[str, Any]]:
    import yaml

    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
        if path.is_dir()
        else []
    )
    if not files:
        raise _CliError(f"{path}: no .yaml, .yml or .json deployment files")
    out: list[dict[str, Any]] = []
    for file in files:
        try:
            documents = list(yaml.safe_load_all(file.read_text()))
        except yaml.YAMLError as exc:
            raise _CliError(f"{file}: not valid YAML: {exc}") from None
        for document in documents:
            if document is None:
                continue
            items = (
                document.get("deployments", [document]) if isinstance(document, dict) else document
            )
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise _CliError(f"{file}: expected a deployment mapping or a list of them")
            out.extend(items)
    return out


def _apply(options: argparse.Namespace) -> int:
    deployments = _read_deployments(options.filename)
    answer = _call(options, "POST", "/v1/fleet/apply", {"deployments": deployments})
    print(f"applied {len(answer['applied'])} deployment(s): {', '.join(answer['applied'])}")
    return 0


def _duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|)\s*", text)
    if match is None:
        raise _CliError(f"{text!r} is not a duration (e.g. 60s, 5m)")
    scale = {"ms": 0.001, "s": 1, "": 1, "m": 60, "h": 3600}[match.group(2)]
    return float(match.group(1)) * scale


def _waves(text: str) -> list[float]:
    waves = []
    for part in text.split(","):
        raw = part.strip().removesuffix("%")
        try:
            waves.append(float(raw))
        except ValueError:
            raise _CliError(f"--waves: {part!r} is not a percentage") from None
    return waves


def _rollout(options: argparse.Namespace) -> int:
    body = {
        "model": options.model,
        "version": options.version,
        "waves": _waves(options.waves),
        "health_gate_s": _duration(options.health_gate),
        "wave_timeout_s": _duration(options.wave_timeout),
    }
    latency = {
        k: v
        for k, v in (
            ("max_ratio_to_baseline", options.max_latency_ratio),
            ("max_ms", options.max_latency_ms),
        )
        if v is not None
    }
    if options.max_error_rate is not None or latency:
        body["analysis"] = {
            "min_requests": options.min_requests,
            "error_rate": (
                {"max": options.max_error_rate} if options.max_error_rate is not None else None
            ),
            "latency_mean": latency or None,
        }
    answer = _call(options, "POST", "/v1/fleet/rollouts", body)
    print(
        f"rollout {options.model}: version {answer['from_version']} -> {answer['version']} "
        f"over {answer['nodes']} node(s), waves {options.waves}"
    )
    if not options.wait:
        return 0
    last = ""
    while True:
        view = _call(options, "GET", f"/v1/fleet/rollouts/{options.model}")
        line = f"  wave {view['wave']}/{len(view['waves'])}: {view['state']}"
        line += f", done {len(view['done'])}, pending {len(view['pending'])}"
        line += f", failed {len(view['failed'])}"
        if line != last:
            print(line, flush=True)
            last = line
        if view["state"] != "Running":
            if view["reason"]:
                print(f"  reason: {view['reason']}")
            return 0 if view["state"] == "Succeeded" else 1
        time.sleep(1)


def _nodes(options: argparse.Namespace) -> int:
    answer = _call(options, "GET", "/v1/fleet/nodes")
    if options.json:
        _print(options, answer)
        return 0
    print(f"{'NODE':<20} {'STATE':<9} {'LAST HB':>8}  {'LABELS':<24} MODELS")
    for node in answer["nodes"]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(node["labels"].items()))
        models = " ".join(f"{m}:v{s['version']}:{s['state']}" for m, s in node["models"].items())
        print(
            f"{node['name']:<20} {node['state']:<9} {node['last_heartbeat_s']:>7.1f}s"
            f"  {labels:<24} {models}"
        )
        for condition in node.get("conditions", []):
            print(f"  {condition['type']} for {condition['for_s']:.0f} s: {condition['reason']}")
    return 0


def _status(options: argparse.Namespace) -> int:
    answer = _call(options, "GET", "/v1/fleet/status")
    if options.json:
        _print(options, answer)
        return 0
    nodes = answer["nodes"]
    print(f"nodes: {nodes['ready']} Ready of {nodes['total']}")
    if nodes.get("server_down"):
        print(f"server down (ServerDown): {', '.join(nodes['server_down'])}")
    print(f"{'MODEL':<20} {'VERSION':>7} {'READY':>7}  {'STATE':<8} REASON")
    for d in answer["deployments"]:
        ready = f"{d.get('ready', 0)}/{d.get('wanted', '?')}"
        reason = d.get("pending_reason", "")
        for node, why in d.get("failures", {}).items():
            reason += f"{'; ' if reason else ''}{node}: {why}"
        print(f"{d['model']:<20} {d['version']:>7} {ready:>7}  {d.get('state', ''):<8} {reason}")
        if "rollout" in d:
            r = d["rollout"]
            print(
                f"  rollout v{r['from_version']} -> v{r['version']}: {r['state']}, wave "
                f"{r['wave']}/{len(r['waves'])}, done {len(r['done'])}, pending "
                f"{len(r['pending'])}, failed {len(r['failed'])} {r['reason']}"
            )
            if "analysis" in r:
                a = r["analysis"]
                print(f"  analysis: {a.get('verdict', '')}: {a.get('why', '')}")
    return 0


def _routing(options: argparse.Namespace) -> int:
    _print(options, _call(options, "GET", "/v1/fleet/routing"))
    return 0


def _logs(options: argparse.Namespace) -> int:
    answer = _call(options, "GET", f"/v1/fleet/nodes/{options.node}/logs", lines=options.lines)
    if options.json:
        _print(options, answer)
    elif answer.get("error"):
        raise _CliError(f"node {options.node}: {answer['error']}")
    else:
        for line in answer.get("lines", []):
            print(line)
    return 0


def _diagnose(options: argparse.Namespace) -> int:
    _print(options, _call(options, "POST", f"/v1/fleet/nodes/{options.node}/diagnose"))
    return 0


_COMMANDS = {
    "push": _push,
    "deploy": _deploy,
    "undeploy": _undeploy,
    "apply": _apply,
    "rollout": _rollout,
    "nodes": _nodes,
    "status": _status,
    "routing": _routing,
    "logs": _logs,
    "diagnose": _diagnose,
}
