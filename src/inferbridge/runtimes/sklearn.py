"""scikit-learn estimators saved with skops (safe to load) or joblib (a pickle: trusted only
when pinned or `trust_pickle`, see docs/security.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.errors import ModelLoadError
from inferbridge.protocol.datatypes import datatype_of, dtype_of
from inferbridge.protocol.types import TensorSpec
from inferbridge.repository.config import ModelConfig
from inferbridge.repository.integrity import require_code_trust
from inferbridge.runtimes.base import Arrays, Runtime, Signature

__all__ = ["SklearnRuntime"]


class SklearnRuntime(Runtime):
    """Runs `model.joblib` (or a `.skops` file): any fitted estimator or pipeline with
    `predict`.

    A `.skops` file loads with skops' type check: only types skops trusts by default, plus
    those listed in the `trusted_types` parameter, may appear in it. Any other file is a
    pickle, which runs code when it loads: it loads only when config.yaml pins its sha256
    or sets `trust_pickle: true`.

    One input, `input` (FP32 `[-1, n_features]` unless config declares otherwise).
    Classifiers return `label` (the predicted class, INT64 for integer classes, BYTES for
    strings) and, when they have `predict_proba`, `probabilities` (FP64 `[-1, n_classes]`, in
    the order of `classes_`). Regressors and other estimators return `predictions` (FP64).
    """

    name = "sklearn"
    platform = "sklearn"
    default_model_file = "model.joblib"
    releases_gil = False

    def __init__(self) -> None:
        self._estimator: Any = None
        self._input_name = "input"
        self._classifier = False
        self._probabilities = False
        self._label_type = "INT64"
        self._signature = Signature()

    def load(self, model_dir: Path, config: ModelConfig, device: str) -> None:
        from sklearn.base import is_classifier

        path = self.model_path(model_dir, config)
        if path.suffix == ".skops":
            estimator = _load_skops(path, config)
        else:
            import joblib

            require_code_trust(path, model_dir, config, "a joblib pickle")
            try:
                estimator = joblib.load(path)
            except Exception as exc:  # unpickling can raise nearly anything on a corrupt file
                raise ModelLoadError(
                    f"joblib cannot load {path}: {type(exc).__name__}: {exc}"
                ) from None
        if not hasattr(estimator, "predict"):
            raise ModelLoadError(
                f"{path} holds a {type(estimator).__name__}, which has no predict()"
            )
        self._estimator = estimator
        if config.inputs:
            self._input_name = config.inputs[0].name
        features = getattr(estimator, "n_features_in_", -1)
        self._classifier = bool(is_classifier(estimator)) and hasattr(estimator, "classes_")
        self._probabilities = self._classifier and hasattr(estimator, "predict_proba")
        inputs = [TensorSpec(self._input_name, "FP32", (-1, int(features)))]
        if self._classifier:
            classes = np.asarray(estimator.classes_)
            self._label_type = datatype_of(classes.dtype)
            outputs = [TensorSpec("label", self._label_type, (-1,))]
            if self._probabilities:
                outputs.append(TensorSpec("probabilities", "FP64", (-1, len(classes))))
        else:
            outputs = [TensorSpec("predictions", "FP64", (-1,))]
        self._signature = Signature(inputs, outputs)

    def metadata(self) -> Signature:
        return self._signature

    def infer(self, inputs: Arrays) -> Arrays:
        features = inputs[self._input_name]
        if len(features) == 0:  # scikit-learn refuses empty input; an empty batch is valid
            return self._empty()
        if not self._classifier:
            return {"predictions": np.asarray(self._estimator.predict(features), dtype=np.float64)}
        labels = np.asarray(self._estimator.predict(features))
        if self._label_type == "BYTES":
            labels = np.array([str(x).encode() for x in labels], dtype=object)
        result = {"label": labels}
        if self._probabilities:
            result["probabilities"] = np.asarray(
                self._estimator.predict_proba(features), dtype=np.float64
            )
        return result

    def _empty(self) -> Arrays:
        result: Arrays = {}
        for spec in self._signature.outputs:
            dtype = object if spec.datatype == "BYTES" else dtype_of(spec.datatype)
            result[spec.name] = np.empty((0, *spec.shape[1:]), dtype=dtype)
        return result

    def unload(self) -> None:
        self._estimator = None


def _load_skops(path: Path, config: ModelConfig) -> Any:
    """A skops file, refused when it holds a type neither skops nor config trusts."""
    try:
        import skops.io as sio
    except ImportError as exc:
        raise ModelLoadError(f"{path}: loading .skops files needs skops ({exc})") from None
    extra = config.parameters.get("trusted_types", [])
    if not isinstance(extra, list) or not all(isinstance(t, str) for t in extra):
        raise ModelLoadError(f"{path}: parameter trusted_types must be a list of type names")
    try:
        untrusted = sio.get_untrusted_types(file=path)
        refused = sorted(set(untrusted) - set(extra))
        if refused:
            raise ModelLoadError(
                f"{path} holds types skops does not trust: {', '.join(refused)}; list the ones "
                "you trust in the model's parameters (trusted_types: [...]) to load it"
            )
        return sio.load(path, trusted=untrusted)
    except ModelLoadError:
        raise
    except Exception as exc:  # a corrupt archive raises zipfile, JSON or skops errors
        raise ModelLoadError(f"skops cannot load {path}: {type(exc).__name__}: {exc}") from None
