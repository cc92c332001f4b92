"""OpenCV: cv2.dnn networks (ONNX, Caffe, TensorFlow, Darknet, ...) and cascade classifiers."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.errors import ModelLoadError
from inferbridge.protocol.types import TensorSpec
from inferbridge.repository.config import ModelConfig
from inferbridge.runtimes.base import Arrays, Runtime, Signature

__all__ = ["BACKENDS", "TARGETS", "OpenCVRuntime"]

#: config `parameters.backend` -> cv2.dnn constant name.
BACKENDS = {
    "default": "DNN_BACKEND_DEFAULT",
    "opencv": "DNN_BACKEND_OPENCV",
    "openvino": "DNN_BACKEND_INFERENCE_ENGINE",
    "cuda": "DNN_BACKEND_CUDA",
    "vulkan": "DNN_BACKEND_VKCOM",
    "timvx": "DNN_BACKEND_TIMVX",
    "cann": "DNN_BACKEND_CANN",
}
#: config `parameters.target` -> cv2.dnn constant name.
TARGETS = {
    "cpu": "DNN_TARGET_CPU",
    "cpu_fp16": "DNN_TARGET_CPU_FP16",
    "opencl": "DNN_TARGET_OPENCL",
    "opencl_fp16": "DNN_TARGET_OPENCL_FP16",
    "cuda": "DNN_TARGET_CUDA",
    "cuda_fp16": "DNN_TARGET_CUDA_FP16",
    "vulkan": "DNN_TARGET_VULKAN",
    "myriad": "DNN_TARGET_MYRIAD",
    "npu": "DNN_TARGET_NPU",
}
_CASCADE_INPUT = TensorSpec("image", "UINT8", (-1, -1, -1))
_CASCADE_OUTPUT = TensorSpec("boxes", "INT32", (-1, 5))


class OpenCVRuntime(Runtime):
    """Runs a cv2.dnn network or a cascade classifier (`mode`: `dnn` or `cascade`).

    dnn (the default; `model.onnx` unless `model_file` says otherwise): the file goes to
    `cv2.dnn.readNet` with `parameters.config_file` (a .prototxt, .pbtxt or .cfg beside it)
    and `parameters.framework`; `backend` and `target` pick the cv2.dnn backend and target
    (defaults `opencv`/`cpu`; a `gpu` instance group defaults to `cuda`/`cuda`). cv2.dnn
    cannot describe its tensors, so config.yaml declares `inputs` and `outputs` (output
    names are layer names).

    cascade (the default for `.xml` files): a cv2.CascadeClassifier (Haar or LBP). Input
    `image`: UINT8 [-1, -1, -1] (a batch of grayscale images) unless config declares
    another name or layout ([H, W], [H, W, 3], [N, H, W], [N, H, W, 3]; colour is BGR).
    Output `boxes`: INT32 [-1, 5], one row per detection: (image index in the batch, x,
    y, w, h). Parameters `scale_factor` (1.1), `min_neighbors` (5), `min_size` (30),
    `max_size` (none), `equalize_hist` (false).

    `num_threads` sets cv2.setNumThreads, which is process-wide. Networks and classifiers
    are not thread-safe, so each worker thread gets its own copy.
    """

    name = "opencv"
    platform = "opencv"
    default_model_file = "model.onnx"

    def __init__(self) -> None:
        self._mode = "dnn"
        self._path = Path()
        self._config_path: Path | None = None
        self._framework = ""
        self._backend = 0
        self._target = 0
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []
        self._detect: dict[str, Any] = {}
        self._equalize = False
        self._local = threading.local()
        self._generation = 0

    def load(self, model_dir: Path, config: ModelConfig, device: str) -> None:
        import cv2

        params = config.parameters
        file_name = config.model_file or (
            "model.xml" if params.get("mode") == "cascade" else self.default_model_file
        )
        path = model_dir / file_name
        if not path.exists():
            raise ModelLoadError(f"model file {path} does not exist")
        mode = str(params.get("mode", "cascade" if path.suffix == ".xml" else "dnn"))
        if mode not in ("dnn", "cascade"):
            raise ModelLoadError(f"{path}: parameter mode={mode!r}; expected 'dnn' or 'cascade'")
        self._mode, self._path = mode, path
        if "num_threads" in params:
            cv2.setNumThreads(int(params["num_threads"]))
        if mode == "cascade":
            self._load_cascade(path, config)
        else:
            self._load_dnn(path, config, device)
        self._generation += 1
        self._worker()  # build this thread's copy now, so a bad file fails the load

    def metadata(self) -> Signature:
        return Signature(list(self._inputs), list(self._outputs))

    def infer(self, inputs: Arrays) -> Arrays:
        worker = self._worker()
        if self._mode == "cascade":
            return {self._outputs[0].name: self._detect_all(worker, inputs[self._inputs[0].name])}
        for spec in self._inputs:
            worker.setInput(np.ascontiguousarray(inputs[spec.name]), spec.name)
        names = [s.name for s in self._outputs]
        results = worker.forward(names)
        return {name: np.asarray(r) for name, r in zip(names, results, strict=True)}

    def unload(self) -> None:
        self._generation += 1
        self._local = threading.local()

    # -- dnn ---------------------------------------------------------------------------------

    def _load_dnn(self, path: Path, config: ModelConfig, device: str) -> None:
        import cv2

        params = config.parameters
        if not config.inputs or not config.outputs:
            raise ModelLoadError(
                f"{path}: cv2.dnn cannot describe its tensors; "
                "config.yaml must declare both inputs and outputs"
            )
        self._config_path = None
        if params.get("config_file"):
            self._config_path = path.parent / str(params["config_file"])
            if not self._config_path.exists():
                raise ModelLoadError(
                    f"{path}: parameter config_file {self._config_path} does not exist"
                )
        self._framework = str(params.get("framework", ""))
        gpu = device.startswith("cuda")
        backend = str(params.get("backend", "cuda" if gpu else "opencv"))
        target = str(params.get("target", "cuda" if gpu else "cpu"))
        if backend not in BACKENDS:
            raise ModelLoadError(
                f"{path}: parameter backend={backend!r}; expected one of {', '.join(BACKENDS)}"
            )
        if target not in TARGETS:
            raise ModelLoadError(
                f"{path}: parameter target={target!r}; expected one of {', '.join(TARGETS)}"
            )
        if "cuda" in (backend, target) and not _cuda_devices(cv2):
            raise ModelLoadError(
                f"{path}: backend/target cuda requested but this OpenCV build sees no CUDA device"
            )
        self._backend = int(getattr(cv2.dnn, BACKENDS[backend]))
        self._target = int(getattr(cv2.dnn, TARGETS[target]))
        self._inputs, self._outputs = config.input_specs(), config.output_specs()

    def _read_net(self) -> Any:
        import cv2

        try:
            net = cv2.dnn.readNet(str(self._path), str(self._config_path or ""), self._framework)
        except cv2.error as exc:
            raise ModelLoadError(f"cv2.dnn cannot read {self._path}: {_cv_message(exc)}") from None
        if net.empty():
            raise ModelLoadError(f"cv2.dnn read an empty network from {self._path}")
        net.setPreferableBackend(self._backend)
        net.setPreferableTarget(self._target)
        layers = set(net.getLayerNames()) | set(net.getUnconnectedOutLayersNames())
        unknown = [s.name for s in self._outputs if s.name not in layers]
        if unknown:
            raise ModelLoadError(
                f"{self._path}: config outputs {unknown} are not layers of the network; its "
                f"unconnected outputs are {list(net.getUnconnectedOutLayersNames())}"
            )
        return net

    # -- cascade -----------------------------------------------------------------------------

    def _load_cascade(self, path: Path, config: ModelConfig) -> None:
        params = config.parameters
        self._inputs = config.input_specs()[:1] or [_CASCADE_INPUT]
        self._outputs = config.output_specs()[:1] or [_CASCADE_OUTPUT]
        image = self._inputs[0]
        if image.datatype != "UINT8" or len(image.shape) not in (2, 3, 4):
            raise ModelLoadError(
                f"{path}: cascade input '{image.name}' must be UINT8 with 2 to 4 dimensions"
            )
        boxes = self._outputs[0]
        if boxes.datatype not in ("INT32", "INT64") or list(boxes.shape) != [-1, 5]:
            raise ModelLoadError(f"{path}: cascade output '{boxes.name}' must be INT32 [-1, 5]")
        try:
            detect: dict[str, Any] = {
                "scaleFactor": float(params.get("scale_factor", 1.1)),
                "minNeighbors": int(params.get("min_neighbors", 5)),
            }
            if "min_size" in params:
                detect["minSize"] = _size(params["min_size"])
            else:
                detect["minSize"] = (30, 30)
            if "max_size" in params:
                detect["maxSize"] = _size(params["max_size"])
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{path}: bad cascade parameter: {exc}") from None
        if detect["scaleFactor"] <= 1.0:
            raise ModelLoadError(f"{path}: scale_factor must be above 1.0")
        self._detect = detect
        self._equalize = bool(params.get("equalize_hist", False))

    def _read_cascade(self) -> Any:
        import cv2

        classifier = cv2.CascadeClassifier()
        try:
            loaded = classifier.load(str(self._path))
        except cv2.error as exc:
            raise ModelLoadError(
                f"cv2.CascadeClassifier cannot read {self._path}: {_cv_message(exc)}"
            ) from None
        if not loaded or classifier.empty():
            raise ModelLoadError(
                f"cv2.CascadeClassifier cannot read {self._path}: not a cascade XML file"
            )
        return classifier

    def _detect_all(self, classifier: Any, images: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        import cv2

        shape = self._inputs[0].shape
        colour = len(shape) == 4 or (len(shape) == 3 and shape[-1] == 3)
        if len(shape) == 2 or (len(shape) == 3 and colour):
            images = images[np.newaxis]  # one image, not a batch
        rows: list[np.ndarray[Any, Any]] = []
        for index, image in enumerate(images):
            gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if colour else image
            gray = np.ascontiguousarray(gray)
            if self._equalize:
                gray = cv2.equalizeHist(gray)
            found = classifier.detectMultiScale(gray, **self._detect)
            found = np.asarray(found, dtype=np.int64).reshape(-1, 4)
            rows.append(np.column_stack([np.full(len(found), index, np.int64), found]))
        boxes = np.concatenate(rows) if rows else np.zeros((0, 5), np.int64)
        return boxes.astype(np.int32 if self._outputs[0].datatype == "INT32" else np.int64)

    # -- per-thread copies -------------------------------------------------------------------

    def _worker(self) -> Any:
        if getattr(self._local, "generation", -1) != self._generation:
            self._local.worker = (
                self._read_cascade() if self._mode == "cascade" else self._read_net()
            )
            self._local.generation = self._generation
        return self._local.worker


def _size(value: Any) -> tuple[int, int]:
    if isinstance(value, int | float):
        return (int(value), int(value))
    width, height = value
    return (int(width), int(height))


def _cuda_devices(cv2: Any) -> int:
    try:
        return int(cv2.cuda.getCudaEnabledDeviceCount())
    except Exception:  # builds without the cuda module
        return 0


def _cv_message(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
