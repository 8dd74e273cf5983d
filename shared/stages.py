"""The three stages over an artifact store. Embedded mode and the Celery workers both call these.

Each stage is idempotent: a published artifact is returned as cached; work in progress lives in
the store's scratch folder so a killed stage resumes; publishing is atomic.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from shared.artifacts import ArtifactStore
from shared.keys import content_key
from shared.specs import CheckpointSpec, CotSetSpec, EvalSpec, StudentSpec

log = logging.getLogger("cotd.stages")
TINY_VERSION = "tiny-v1"
Check = Callable[..., None]
"""Called by a stage at every step, batch or item; raises to stop it (e.g. a cancelled grid)."""


class StageResult(BaseModel):
    """What a stage produced: the artifact key, whether it was already there, and its manifest."""

    kind: str
    key: str
    cached: bool
    manifest: dict


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def generate_stage(spec: CotSetSpec, store: ArtifactStore, check: Check | None = None) -> StageResult:
    """Build and publish a CoT set (cotsets/<key>); `check()` runs after each teacher reply."""
    from services.generator.build import build_cotset

    key = spec.key
    if (m := store.manifest("cotsets", key)) is not None:
        return StageResult(kind="cotsets", key=key, cached=True, manifest=m)
    work = store.scratch("cotsets", key)
    out = _fresh(work / "out")
    manifest = build_cotset(spec, work, out, check=check)
    published = store.publish("cotsets", key, out, manifest)
    log.info("published cotsets/%s", key)
    shutil.rmtree(work, ignore_errors=True)
    return StageResult(kind="cotsets", key=key, cached=False, manifest=published)


def resolve_student(student: StudentSpec, cot_key: str, dataset: str, store: ArtifactStore) -> str:
    """A loadable model id: a hub id or path as given, or a built (and published) tiny or GGUF student."""
    return student_base(student, cot_key, dataset, store)[0]


def student_base(student: StudentSpec, cot_key: str, dataset: str, store: ArtifactStore) -> tuple[str, str]:
    """(loadable model id, reference a checkpoint records): `models/<key>` for tiny and GGUF students."""
    from services.trainer.models import artifact_ref

    if student.model.endswith(".gguf"):
        from services.trainer.gguf_import import import_into_store

        gguf_key = import_into_store(student.model, store)
        return str(store.fetch("models", gguf_key)), artifact_ref(gguf_key)
    if not student.model.startswith("tiny:"):
        return student.model, student.model
    from services.trainer.tiny import init_tiny

    size = student.model.split(":", 1)[1]
    corpus_from = None if dataset == "arith" else cot_key
    key = content_key("model", {"tiny": size, "corpus": corpus_from, "version": TINY_VERSION})
    if not store.exists("models", key):
        work = store.scratch("models", key)
        corpus = [str(store.fetch("cotsets", cot_key) / "cot.jsonl")] if corpus_from else None
        init_tiny(_fresh(work / "out"), corpus=corpus, size=size)
        store.publish("models", key, work / "out", {"tiny": size, "corpus": corpus_from})
        shutil.rmtree(work, ignore_errors=True)
    return str(store.fetch("models", key)), artifact_ref(key)


def train_stage(
    spec: CheckpointSpec,
    store: ArtifactStore,
    device: str = "auto",
    stop_after: int | None = None,
    check: Check | None = None,
) -> StageResult:
    """Fine-tune the student on the CoT set and publish checkpoints/<key>; `check()` runs every step."""
    from services.trainer.recipe import train_sft
    from shared.cotset import read_training_pairs

    key = spec.key
    if (m := store.manifest("checkpoints", key)) is not None:
        return StageResult(kind="checkpoints", key=key, cached=True, manifest=m)
    pairs = read_training_pairs(store.fetch("cotsets", spec.cot.key))
    model_id, base_ref = student_base(spec.student, spec.cot.key, spec.cot.dataset.name, store)
    work = store.scratch("checkpoints", key)
    out = _fresh(work / "out")
    summary = train_sft(
        model_id,
        pairs,
        out,
        work / "state",
        spec.training,
        spec.seed,
        template=spec.student.template,
        revision=spec.student.revision,
        trust_remote_code=spec.student.trust_remote_code,
        device_setting=device,
        stop_after=stop_after,
        on_step=check,
        base_ref=base_ref,
    )
    if not summary.get("complete"):
        return StageResult(kind="checkpoints", key=key, cached=False, manifest={"incomplete": summary})
    manifest = {
        "student": spec.student.name,
        "base_model": spec.student.model,
        "cot_key": spec.cot.key,
        "train": summary,
    }
    published = store.publish("checkpoints", key, out, manifest)
    log.info("published checkpoints/%s", key)
    shutil.rmtree(work, ignore_errors=True)
    return StageResult(kind="checkpoints", key=key, cached=False, manifest=published)


def evaluate_stage(
    spec: EvalSpec, store: ArtifactStore, device: str = "auto", check: Check | None = None
) -> StageResult:
    """Score the checkpoint on the test split and publish evals/<key>; `check()` runs every batch."""
    from services.evaluator.evaluate import evaluate_model
    from shared.datasets.splits import load_split

    key = spec.key
    if (m := store.manifest("evals", key)) is not None:
        return StageResult(kind="evals", key=key, cached=True, manifest=m)
    questions = load_split(spec.dataset, "test")
    if spec.evaluation.test_size:
        questions = questions[: spec.evaluation.test_size]
    work = store.scratch("evals", key)
    out = work / "out"
    out.mkdir(parents=True, exist_ok=True)  # kept: holds the partial predictions of a killed run
    metrics = evaluate_model(
        store.fetch("checkpoints", spec.checkpoint.key),
        questions,
        out,
        spec.evaluation,
        template=spec.checkpoint.student.template,
        device_setting=device,
        trust_remote_code=spec.checkpoint.student.trust_remote_code,
        check=check,
    )
    manifest = {"checkpoint_key": spec.checkpoint.key, "dataset": spec.dataset.name, "metrics": metrics}
    published = store.publish("evals", key, out, manifest)
    log.info("published evals/%s", key)
    shutil.rmtree(work, ignore_errors=True)
    return StageResult(kind="evals", key=key, cached=False, manifest=published)
