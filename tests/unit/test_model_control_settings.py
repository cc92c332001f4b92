"""The model control settings as the environment gives them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from inferbridge.settings import Settings


@pytest.mark.parametrize(
    ("value", "names"),
    [("iris", ["iris"]), ("iris, iris_onnx", ["iris", "iris_onnx"]), ('["a", "*"]', ["a", "*"])],
)
def test_load_model_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, names: list[str]
) -> None:
    monkeypatch.setenv("INFERBRIDGE_LOAD_MODEL", value)
    monkeypatch.setenv("INFERBRIDGE_MODEL_CONTROL_MODE", "explicit")
    settings = Settings()
    assert settings.load_model == names
    assert settings.model_control_mode == "explicit"


def test_bad_mode_and_poll_interval_are_refused() -> None:
    with pytest.raises(ValidationError, match="model_control_mode"):
        Settings(model_control_mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="repository_poll_secs"):
        Settings(repository_poll_secs=0)
