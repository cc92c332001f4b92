"""Convert the torch digits MLP (the TorchScript example's model) to TFLite with litert-torch.

litert-torch needs its own virtual environment (about 2 GB, and it would downgrade
packages of the main one, see FACTS.md), so this script is not part of the example build.
The file it writes, `digits_torch.tflite` beside it, is committed; the example build copies
it into the repository as `digits_tflite_torch`. To reproduce it:

    python3 -m venv /tmp/litert && /tmp/litert/bin/pip install litert-torch scikit-learn
    PYTHONPATH=src /tmp/litert/bin/python -m inferbridge.examples.tflite.convert_torch

The conversion has a fixed batch size (BATCH); the tflite runtime serves any batch in chunks.
"""

from __future__ import annotations

import sys
from pathlib import Path

BATCH = 1
OUTPUT = Path(__file__).resolve().parent / "digits_torch.tflite"


def main() -> int:
    import litert_torch
    import numpy as np
    import torch

    from inferbridge.examples.build import digits_split
    from inferbridge.examples.builders.torchscript import train_digits_mlp

    model = train_digits_mlp().eval()
    sample = (torch.zeros(BATCH, 64),)
    converted = litert_torch.convert(model, sample)
    converted.export(str(OUTPUT))
    X = digits_split()[1][:BATCH]
    with torch.inference_mode():
        want = model(torch.from_numpy(X))[0].numpy()
    got = np.asarray(converted(torch.from_numpy(X))[0])
    print(
        f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes); max |diff| {np.abs(got - want).max():.2e}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
