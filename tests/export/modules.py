"""Small torch modules the export tests load by `module:Class` path (in a child process)."""

from __future__ import annotations

from typing import Any

import torch


class TinyNet(torch.nn.Module):  # type: ignore[misc]
    """A deterministic MLP: export must reproduce it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
        )

    def forward(self, x: Any) -> Any:
        return self.layers(x)


class BranchyNet(TinyNet):
    """Python control flow on the batch size: tracing bakes in the branch of the traced
    sample, so the export is wrong for other batch sizes - the verifier must say so."""

    def forward(self, x: Any) -> Any:
        out = self.layers(x)
        return out * 2 if x.shape[0] == 1 else out
