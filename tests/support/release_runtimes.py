"""A test runtime whose versions behave differently, for rollout tests and the rollout
benchmark (`runtime: tests.support.release_runtimes:ReleaseEcho`).

`y = x + value` with `value` from the version directory's `value.txt`; the version
directory's optional `behaviour.json` makes that version fail a share of its calls
(`fail_ratio`, deterministic: exactly that share of every run of calls) or sleep
(`sleep_s`) — the broken and slow candidates a rollout must catch.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import numpy as np

from inferbridge.protocol.types import TensorSpec
from inferbridge.repository.config import ModelConfig
from inferbridge.runtimes.base import Arrays, Runtime, Signature


class ReleaseEcho(Runtime):
    name = "release_echo"
    platform = "release_echo"
    default_model_file = "value.txt"

    def load(self, model_dir: Path, config: ModelConfig, device: str) -> None:
        self.value = np.float32(float((model_dir / "value.txt").read_text().strip()))
        behaviour_file = model_dir / "behaviour.json"
        behaviour = json.loads(behaviour_file.read_text()) if behaviour_file.exists() else {}
        self.fail_ratio = float(behaviour.get("fail_ratio", 0.0))
        self.sleep_s = float(behaviour.get("sleep_s", 0.0))
        self.calls = 0
        self._lock = threading.Lock()

    def metadata(self) -> Signature:
        return Signature(
            inputs=[TensorSpec("x", "FP32", (-1, -1))], outputs=[TensorSpec("y", "FP32", (-1, -1))]
        )

    def infer(self, inputs: Arrays) -> Arrays:
        with self._lock:
            self.calls += 1
            calls = self.calls
        if self.sleep_s:
            time.sleep(self.sleep_s)
        ratio = self.fail_ratio
        if ratio and math.floor(calls * ratio) > math.floor((calls - 1) * ratio):
            raise RuntimeError(f"injected failure (call {calls}, fail_ratio {ratio})")
        return {"y": inputs["x"] + self.value}
