"""TorchScript example: a small digits classifier trained in torch and traced."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

from inferbridge.examples.builders import SkipExample

__all__ = ["build_torchscript", "train_digits_mlp"]

_SEED = 0


def train_digits_mlp() -> Any:
    """A 64-32-10 MLP on the digits split; returns probabilities and labels. Deterministic."""
    import torch

    from inferbridge.examples.build import digits_split

    class DigitsMLP(torch.nn.Module):  # type: ignore[misc]  # torch is Any to mypy
        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.Sequential(
                torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
            )

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.layers(pixels / 16.0)
            return torch.softmax(logits, dim=1), torch.argmax(logits, dim=1)

    X_train, X_test, y_train, y_test = digits_split()
    torch.manual_seed(_SEED)
    model = DigitsMLP()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    inputs, targets = torch.from_numpy(X_train), torch.from_numpy(y_train).long()
    for _ in range(300):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.layers(inputs / 16.0), targets)
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.inference_mode():
        accuracy = float((model(torch.from_numpy(X_test))[1].numpy() == y_test).mean())
    if accuracy < 0.93:
        raise RuntimeError(f"torch digits example reached only {accuracy:.3f} held-out accuracy")
    return model


def build_torchscript(root: Path) -> None:
    """Write `digits_torchscript`: the MLP traced with torch.jit.trace."""
    try:
        import torch
    except ImportError as exc:
        raise SkipExample(f"torch is not installed ({exc})") from None
    model = train_digits_mlp()
    with torch.no_grad(), warnings.catch_warnings():
        # torch >= 2.10 deprecates TorchScript in favour of torch.export; the issue asks for
        # TorchScript, which torch still loads and runs.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, torch.zeros(2, 64))
        model_dir = root / "digits_torchscript"
        (model_dir / "1").mkdir(parents=True)
        torch.jit.save(traced, str(model_dir / "1" / "model.pt"))
    (model_dir / "config.yaml").write_text(
        "# A 64-32-10 MLP trained on the digits in torch, traced to TorchScript. TorchScript\n"
        "# has no tensor names: inputs are passed in order, outputs map the returned tuple.\n"
        "runtime: torchscript\n"
        "parameters: {num_threads: 1}\n"
        "instance_group: [{count: 1, kind: cpu}]\n"
        "# An archive carries TorchScript code: the pinned digest is what lets it load.\n"
        f"sha256: {{1/model.pt: '{_sha256(model_dir / '1' / 'model.pt')}'}}\n"
        "inputs:\n"
        "  - {name: pixels, datatype: FP32, shape: [-1, 64]}\n"
        "outputs:\n"
        "  - {name: probabilities, datatype: FP32, shape: [-1, 10]}\n"
        "  - {name: label, datatype: INT64, shape: [-1]}\n"
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


if __name__ == "__main__":
    from inferbridge.examples.builders import child_main

    child_main(build_torchscript)
