"""No-op stages (`COTD_STAGE_MODE=noop`): trivial artifacts through the real store and queues.

They measure the orchestration's own overhead (queue, Redis state, artifact I/O): each reads its
input artifact and publishes a small one, atomically, under the same key as the real stage would.
Use them only against a dedicated bucket: their artifacts would shadow real ones.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from shared.artifacts import ArtifactStore
from shared.orchestration.stages import StageResult, build_once
from shared.specs import CheckpointSpec, CotSetSpec, EvalSpec


def _publish(store: ArtifactStore, kind: str, key: str, files: dict[str, str], manifest: dict) -> StageResult:
    def build(work: Path, out: Path) -> dict:
        for name, text in files.items():
            (out / name).write_text(text)
        return {**manifest, "noop": True}

    return build_once(store, kind, key, build)


def noop_generate(spec: CotSetSpec, store: ArtifactStore) -> StageResult:
    """A one-record CoT set."""
    rec = {"id": "noop", "question": "1+1?", "rationale": "The answer is 2.", "gold": "2", "parsed": True, "correct": True}
    stats = {"items": 1, "failed": 0, "kept": 1, "answer_parsed_rate": 1.0, "teacher_accuracy": 1.0}
    return _publish(store, "cotsets", spec.key, {"cot.jsonl": json.dumps(rec) + "\n"}, {"teacher": spec.teacher.name, "stats": stats})


def noop_train(spec: CheckpointSpec, store: ArtifactStore) -> StageResult:
    """A checkpoint folder holding a hash of its CoT set."""
    src = store.fetch("cotsets", spec.cot.key) / "cot.jsonl"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    return _publish(store, "checkpoints", spec.key, {"weights.txt": digest}, {"cot_key": spec.cot.key, "train": {"steps": 0}})


def noop_evaluate(spec: EvalSpec, store: ArtifactStore) -> StageResult:
    """Predictions and metrics derived from the key (deterministic, meaningless)."""
    store.fetch("checkpoints", spec.checkpoint.key)
    acc = int(spec.key[:2], 16) / 255
    metrics = {"accuracy": acc, "ci_low": acc, "ci_high": acc, "n": 1, "extraction_failure_rate": 0.0, "mean_output_tokens": 1.0}
    pred = {"id": "noop", "correct": acc >= 0.5}
    files = {"metrics.json": json.dumps(metrics), "predictions.jsonl": json.dumps(pred) + "\n"}
    return _publish(store, "evals", spec.key, files, {"checkpoint_key": spec.checkpoint.key, "metrics": metrics})
