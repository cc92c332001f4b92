"""Reading the openb trace (Alibaba cluster-trace-gpu-v2023): node lists and task lists.

Node CSV: `sn, cpu_milli, memory_mib, gpu, model`. Task CSV: `name, cpu_milli, memory_mib,
num_gpu, gpu_milli` and optionally `gpu_spec` (allowed GPU types, `|`-separated) and the
trace's timing columns, which placement ignores. A malformed row raises
`PlacementInputError` naming the file, the line and the field.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from inferbridge.placement.model import MILLI, Node, PlacementInputError
from inferbridge.placement.state import Shape

__all__ = ["Task", "read_nodes", "read_tasks"]

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
TASK_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")


@dataclass(frozen=True, slots=True)
class Task:
    """One task of a trace: its name and resource shape."""

    name: str
    shape: Shape


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise PlacementInputError(f"{path}: cannot read: {exc.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise PlacementInputError(f"{path}: missing column(s) {', '.join(missing)}")
        for row in reader:
            yield reader.line_num, row


def _int(path: Path, line: int, row: dict[str, str], column: str) -> int:
    text = (row.get(column) or "").strip()
    try:
        value = int(text)
    except ValueError:
        try:
            as_float = float(text)
        except ValueError:
            as_float = float("nan")
        if not as_float.is_integer():
            raise PlacementInputError(
                f"{path}:{line}: {column} must be an integer, got {text!r}"
            ) from None
        value = int(as_float)
    if value < 0:
        raise PlacementInputError(f"{path}:{line}: {column} must not be negative, got {value}")
    return value


def read_nodes(path: str | Path) -> list[Node]:
    """The nodes of an openb node list, in file order."""
    path = Path(path)
    nodes = []
    for line, row in _rows(path, NODE_COLUMNS):
        gpus = _int(path, line, row, "gpu")
        model = (row.get("model") or "").strip()
        if model.lower() == "nan":
            model = ""
        if gpus and not model:
            raise PlacementInputError(f"{path}:{line}: model is required for a node with GPUs")
        name = (row.get("sn") or "").strip()
        if not name:
            raise PlacementInputError(f"{path}:{line}: sn (node name) is empty")
        nodes.append(
            Node(
                name=name,
                cpu_milli=_int(path, line, row, "cpu_milli"),
                memory_mib=_int(path, line, row, "memory_mib"),
                gpus=gpus,
                gpu_type=model if gpus else "",
            )
        )
    if not nodes:
        raise PlacementInputError(f"{path}: no nodes")
    return nodes


def read_tasks(path: str | Path) -> list[Task]:
    """The tasks of an openb task list, in file order.

    As in the simulator's CSV conversion, a GPU task's per-GPU share is capped at 1000 and
    a multi-GPU task asks for whole GPUs.
    """
    path = Path(path)
    tasks = []
    for line, row in _rows(path, TASK_COLUMNS):
        name = (row.get("name") or "").strip()
        if not name:
            raise PlacementInputError(f"{path}:{line}: name is empty")
        gpus = _int(path, line, row, "num_gpu")
        milli = min(_int(path, line, row, "gpu_milli"), MILLI) if gpus else 0
        if gpus and milli == 0:
            raise PlacementInputError(f"{path}:{line}: gpu_milli must be > 0 when num_gpu > 0")
        if gpus > 1 and milli != MILLI:
            raise PlacementInputError(
                f"{path}:{line}: gpu_milli {milli} with num_gpu {gpus}: only one GPU can be shared"
            )
        spec = (row.get("gpu_spec") or "").strip()
        types = tuple(t for t in spec.split("|") if t and t.lower() != "nan") if gpus else ()
        shape = Shape(
            cpu_milli=_int(path, line, row, "cpu_milli"),
            memory_mib=_int(path, line, row, "memory_mib"),
            gpus=gpus,
            gpu_milli=milli,
            gpu_types=types,
        )
        tasks.append(Task(name, shape))
    if not tasks:
        raise PlacementInputError(f"{path}: no tasks")
    return tasks
