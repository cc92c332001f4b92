"""Test runtimes loaded by path (`runtime: tests.support.runtimes:SleepEcho`).

They let tests control timing and see how the layers above call a runtime; they never
stand in for a framework's answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.protocol.types import TensorSpec
from inferbridge.repository.config import ModelConfig
from inferbridge.runtimes.base import Arrays, Runtime, Signature


class SleepEcho(Runtime):
    """Returns its FP32 input `x` as `y` after sleeping `parameters.sleep_s` seconds.

    `parameters.fail_on` makes a batch fail when any element equals that value; `y_batch`
    reports the batch size each call saw, so tests can see batches form; `log_file` gets a
    line when a call starts and ends, with the first value of every row, so tests can see
    what ran, in order.
    """

    name = "sleep_echo"
    platform = "sleep_echo"
    default_model_file = ""

    def load(self, model_dir: Path, config: ModelConfig, device: str) -> None:
        self.sleep_s = float(config.parameters.get("sleep_s", 0.0))
        self.fail_on: Any = config.parameters.get("fail_on")
        log = config.parameters.get("log_file")
        self.log_file = Path(log) if log else None

    def metadata(self) -> Signature:
        return Signature(
            inputs=[TensorSpec("x", "FP32", (-1, -1))],
            outputs=[TensorSpec("y", "FP32", (-1, -1)), TensorSpec("y_batch", "INT64", (-1,))],
        )

    def _log(self, event: str, x: np.ndarray[Any, Any]) -> None:
        if self.log_file is not None:
            # One line per event: start/end, then the first value of every row of the batch.
            with self.log_file.open("a") as log:
                log.write(" ".join([event, *(str(float(v)) for v in x[:, 0])]) + "\n")

    def infer(self, inputs: Arrays) -> Arrays:
        x = inputs["x"]
        self._log("start", x)
        if self.fail_on is not None and bool(np.any(x == float(self.fail_on))):
            raise ValueError(f"input contains {self.fail_on}")
        time.sleep(self.sleep_s)
        self._log("end", x)
        return {"y": x.copy(), "y_batch": np.full(x.shape[0], x.shape[0], dtype=np.int64)}


class VersionedEcho(Runtime):
    """Returns `y = x + value`, where `value` is read from the version directory's
    `value.txt` at load; a file that is not a number fails the load, as a broken artefact
    does. `parameters.load_sleep_s` makes loading slow, `parameters.sleep_s` inference."""

    name = "versioned_echo"
    platform = "versioned_echo"
    default_model_file = "value.txt"

    def load(self, model_dir: Path, config: ModelConfig, device: str) -> None:
        time.sleep(float(config.parameters.get("load_sleep_s", 0.0)))
        self.sleep_s = float(config.parameters.get("sleep_s", 0.0))
        text = (model_dir / "value.txt").read_text().strip()
        try:
            self.value = float(text)
        except ValueError:
            raise ValueError(f"value.txt holds {text!r}, not a number") from None

    def metadata(self) -> Signature:
        return Signature(
            inputs=[TensorSpec("x", "FP32", (-1, -1))], outputs=[TensorSpec("y", "FP32", (-1, -1))]
        )

    def infer(self, inputs: Arrays) -> Arrays:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return {"y": inputs["x"] + np.float32(self.value)}


class Identity(Runtime):
    """Returns each input as the output at the same position (Triton's QA identity
    models); the signature is the config's `inputs` and `outputs`."""

    name = "identity"
    platform = "identity"
    default_model_file = ""

    def load(self, model_dir: Path, config: ModelConfig, device: str) -> None:
        self.signature = Signature(inputs=config.input_specs(), outputs=config.output_specs())
        self.sleep_s = float(config.parameters.get("sleep_s", 0.0))

    def metadata(self) -> Signature:
        return self.signature

    def infer(self, inputs: Arrays) -> Arrays:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return {
            out.name: inputs[spec.name]
            for spec, out in zip(self.signature.inputs, self.signature.outputs, strict=True)
        }


class Repeat(Runtime):
    """A decoupled model shaped as Triton's "repeat" example: for each element of the INT32
    input `IN` it sends one response, `OUT` (that element) and `IDX` (its index), after
    `DELAY[i]` milliseconds (UINT32, as long as IN); then waits `WAIT[0]` milliseconds
    before the request is complete. `parameters.log_file` gets "closed" when a request's
    iterator is closed before its end, so tests can see cancellation reach the runtime."""

    name = "repeat"
    platform = "repeat"
    default_model_file = ""
    decoupled = True

    def load(self, model_dir: Path, config: ModelConfig, device: str) -> None:
        log = config.parameters.get("log_file")
        self.log_file = Path(log) if log else None

    def metadata(self) -> Signature:
        return Signature(
            inputs=[
                TensorSpec("IN", "INT32", (-1,)),
                TensorSpec("DELAY", "UINT32", (-1,)),
                TensorSpec("WAIT", "UINT32", (1,)),
            ],
            outputs=[TensorSpec("OUT", "INT32", (1,)), TensorSpec("IDX", "UINT32", (1,))],
        )

    def infer(self, inputs: Arrays) -> Arrays:
        raise AssertionError("a decoupled runtime is served by infer_stream only")

    def infer_stream(self, inputs: Arrays) -> Iterator[Arrays]:
        values, delays = inputs["IN"], inputs["DELAY"]
        if len(delays) != len(values):
            raise ValueError(f"DELAY has {len(delays)} elements for {len(values)} in IN")
        finished = False
        try:
            for index, (value, delay) in enumerate(zip(values, delays, strict=True)):
                time.sleep(float(delay) / 1000)
                yield {
                    "OUT": np.array([value], dtype=np.int32),
                    "IDX": np.array([index], dtype=np.uint32),
                }
            time.sleep(float(inputs["WAIT"][0]) / 1000)
            finished = True
        finally:
            if not finished and self.log_file is not None:
                with self.log_file.open("a") as log:
                    log.write("closed\n")


class MockLLM(Runtime):
    """A decoupled text model shaped as Triton's QA `mock_llm` (qa/python_models/
    generate_models): BYTES `PROMPT` [1, 1] and BOOL `STREAM` [1, 1] in, BYTES `TEXT` out.
    With STREAM false it answers once with the prompt; with STREAM true it answers
    `parameters.repetition` times (default 1), then raises "An Error Occurred" when
    `parameters.fail_last` is set. Before every response after the first it waits for
    `parameters.gate_file` to exist, when one is given (up to 60 s; then TEXT says "gate
    timed out"), so tests can see a response arrive before the next one is made;
    `parameters.delay_s` is slept before each streamed response; `parameters.log_file` gets
    "closed" when a request's iterator is closed early."""

    name = "mock_llm"
    platform = "mock_llm"
    default_model_file = ""
    decoupled = True

    def load(self, model_dir: Path, config: ModelConfig, device: str) -> None:
        self.repetition = int(config.parameters.get("repetition", 1))
        self.fail_last = bool(config.parameters.get("fail_last", False))
        self.delay_s = float(config.parameters.get("delay_s", 0.0))
        gate = config.parameters.get("gate_file")
        self.gate_file = Path(gate) if gate else None
        log = config.parameters.get("log_file")
        self.log_file = Path(log) if log else None

    def metadata(self) -> Signature:
        return Signature(
            inputs=[TensorSpec("PROMPT", "BYTES", (1, 1)), TensorSpec("STREAM", "BOOL", (1, 1))],
            outputs=[TensorSpec("TEXT", "BYTES", (1, -1))],
        )

    def infer(self, inputs: Arrays) -> Arrays:
        raise AssertionError("a decoupled runtime is served by infer_stream only")

    def _wait_for_gate(self) -> bool:
        if self.gate_file is None:
            return True
        deadline = time.monotonic() + 60
        while not self.gate_file.exists():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def infer_stream(self, inputs: Arrays) -> Iterator[Arrays]:
        prompt = inputs["PROMPT"]
        if not bool(inputs["STREAM"].reshape(-1)[0]):
            yield {"TEXT": prompt.copy()}
            return
        finished = False
        try:
            for index in range(self.repetition):
                time.sleep(self.delay_s)
                opened = index == 0 or self._wait_for_gate()
                text = prompt if opened else np.array([[b"gate timed out"]], dtype=object)
                yield {"TEXT": text.copy()}
            finished = True
            if self.fail_last:
                raise ValueError("An Error Occurred")
        finally:
            if not finished and self.log_file is not None:
                with self.log_file.open("a") as log:
                    log.write("closed\n")
