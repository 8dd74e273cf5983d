"""Documents of the `svamp_cotd` lm-eval task: the rendered prompts that bench/evaluate.py writes.

`load_docs(docs_file=...)` reads a JSON list of {"id", "prompt", "gold"} (the file is named in the
task metadata, or by the environment variable COTD_LM_EVAL_DOCS); `doc_to_text` returns the prompt
unchanged, so lm-eval encodes exactly the text cotd's evaluator encodes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def load_docs(docs_file: str | None = None, **_: object) -> dict:
    """{"test": the documents} from `docs_file` (or $COTD_LM_EVAL_DOCS)."""
    import datasets

    path = docs_file or os.environ.get("COTD_LM_EVAL_DOCS")
    if not path:
        raise ValueError("svamp_cotd: no docs_file in the task metadata and COTD_LM_EVAL_DOCS is unset")
    docs = json.loads(Path(path).read_text(encoding="utf-8"))
    return {"test": datasets.Dataset.from_list(docs)}


def doc_to_text(doc: dict) -> str:
    """The already-rendered prompt (chat template applied by cotd)."""
    return doc["prompt"]
