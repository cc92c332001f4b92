"""`inferbridge placement serve|simulate|policies`.

Exit status: 0 on success, 2 for bad arguments or inputs (the message names the row or
field).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]


def register(commands: Any) -> None:
    from inferbridge.placement.policies import policy_names

    placement = commands.add_parser(
        "placement", help="fragmentation-aware GPU placement: kube-scheduler extender, simulator"
    )
    verbs = placement.add_subparsers(dest="placement_command", required=True)

    serve = verbs.add_parser(
        "serve", help="serve kube-scheduler's extender API (filter, prioritize)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8888)
    serve.add_argument("--policy", default="fgd", choices=policy_names())
    serve.add_argument(
        "--workload", type=Path, help="openb task CSV: the arrival distribution FGD expects"
    )
    serve.add_argument(
        "--nodes", type=Path, help="openb node CSV: node cache for nodeCacheCapable: true"
    )

    simulate = verbs.add_parser("simulate", help="replay a trace with the FGD paper's protocol")
    simulate.add_argument("--nodes", type=Path, required=True, help="openb node CSV")
    simulate.add_argument("--tasks", type=Path, required=True, help="openb task CSV")
    simulate.add_argument("--policy", default="fgd", choices=policy_names())
    simulate.add_argument("--seeds", default="42", help="comma-separated seeds (default 42)")
    simulate.add_argument("--inflation", type=float, default=1.3)

    verbs.add_parser("policies", help="list the placement policies")


def run(options: argparse.Namespace) -> int:
    from inferbridge.placement.model import PlacementInputError

    try:
        if options.placement_command == "policies":
            from inferbridge.placement.policies import policy_names

            print("\n".join(policy_names()))
            return 0
        if options.placement_command == "simulate":
            return _simulate(options)
        return _serve(options)
    except PlacementInputError as exc:
        print(f"inferbridge placement: {exc.message}", file=sys.stderr)
        return 2


def _simulate(options: argparse.Namespace) -> int:
    from inferbridge.placement.simulate import simulate
    from inferbridge.placement.trace import read_nodes, read_tasks

    try:
        seeds = [int(s) for s in options.seeds.split(",") if s.strip()]
    except ValueError:
        print(f"inferbridge placement: --seeds: not integers: {options.seeds!r}", file=sys.stderr)
        return 2
    nodes = read_nodes(options.nodes)
    tasks = read_tasks(options.tasks)
    print("policy seed tasks failed alloc@100% alloc@130% frag@100% seconds")
    for seed in seeds:
        result = simulate(nodes, tasks, options.policy, seed, options.inflation)
        alloc, frag = result.curve("alloc"), result.curve("frag")
        print(
            f"{options.policy} {seed} {result.tasks} {result.failed} {alloc.get(100)} "
            f"{alloc.get(130)} {frag.get(100)} {result.seconds:.2f}"
        )
    return 0


def _serve(options: argparse.Namespace) -> int:
    from inferbridge.placement.extender import Extender, ExtenderServer
    from inferbridge.placement.placer import Placer
    from inferbridge.placement.trace import read_nodes, read_tasks

    workload = [t.shape for t in read_tasks(options.workload)] if options.workload else None
    nodes = read_nodes(options.nodes) if options.nodes else []
    server = ExtenderServer(
        Extender(Placer(options.policy, workload), nodes), options.host, options.port
    )
    print(f"inferbridge placement: extender ({options.policy}) on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
