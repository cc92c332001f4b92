"""A test runtime for the worker process: echoes, or fails the way its input asks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from inferbridge.errors import InvalidInput
from inferbridge.repository.config import ModelConfig
from inferbridge.runtimes.base import Arrays, Runtime, Signature


class Echo(Runtime):
    """`out` is `x`; `x[0] == -1` raises InvalidInput, `-2` ValueError, `-3` exits."""

    name = "isolation_echo"
    platform = "isolation_echo"
    default_model_file = ""

    def load(self, model_dir: Path, config: ModelConfig, device: str) -> None:
        if config.parameters.get("fail_load"):
            raise ValueError("this model does not load")
        self.signature = Signature(config.input_specs(), config.output_specs())

    def metadata(self) -> Signature:
        return self.signature

    def infer(self, inputs: Arrays) -> Arrays:
        x = inputs["x"]
        first = x.flat[0] if x.size and x.dtype.kind in "iuf" else 0
        if first == -1:
            raise InvalidInput("negative one is not welcome")
        if first == -2:
            raise ValueError("minus two breaks me")
        if first == -3:
            os._exit(3)
        return {"out": x, "pid": np.full(len(x), os.getpid(), np.int64)}
