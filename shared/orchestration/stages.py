"""The three stages over an artifact store. Embedded mode and the Celery workers both call these.

Each stage is idempotent: a published artifact is returned as cached; work in progress lives in
the store's scratch folder so a killed stage resumes; publishing is atomic.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from shared.artifacts import ArtifactStore
from shared.datasets.registry import DATASETS
from shared.keys import content_key
from shared.specs import CheckpointSpec, CotSetSpec, EvalSpec, StudentSpec

log = logging.getLogger("cotd.stages")
TINY_VERSION = "tiny-v1"
Check = Callable[..., None]
"""Called by a stage at every step, batch or item; raises to stop it (e.g. a cancelled grid)."""


class StageResult(BaseModel):
    """What a stage produced: the artifact key, whether it was already there, and its manifest.

    `stopped` holds the training summary of a run that stopped before its end (`stop_after`); nothing was
    published then and `manifest` is empty.
    """

    kind: str
    key: str
    cached: bool
    manifest: dict
    stopped: dict | None = None

    @property
    def complete(self) -> bool:
        """Whether the artifact is published (cached or built to the end)."""
        return self.stopped is None


Build = Callable[[Path, Path], "dict | StageResult"]
"""Builds an artifact: given the scratch folder and its empty `out` folder, fills `out` and returns the
manifest, or a StageResult to return without publishing."""


def build_once(
    store: ArtifactStore, kind: str, key: str, build: Build, keep_out: bool = False, attempt: bool = False
) -> StageResult:
    """The artifact `kind/key`: cached when published, else built in scratch, published, scratch cleaned.

    `keep_out` keeps what a killed run left in `out` (the evaluator resumes from its predictions).
    `attempt` builds in a folder of this call's own, removed even on failure: for builds that take
    seconds and run without a lease, so workers sharing a cache each build and the first publication wins.
    """
    if (m := store.manifest(kind, key)) is not None:
        return StageResult(kind=kind, key=key, cached=True, manifest=m)
    work = store.scratch(kind, key)
    if attempt:
        work = work / f"attempt-{uuid.uuid4().hex[:12]}"
    try:
        out = work / "out"
        if not keep_out:
            shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        manifest = build(work, out)
        if isinstance(manifest, StageResult):
            return manifest
        published = store.publish(kind, key, out, manifest)
        log.info("published %s/%s", kind, key)
        shutil.rmtree(work, ignore_errors=True)
        return StageResult(kind=kind, key=key, cached=False, manifest=published)
    finally:
        if attempt:
            shutil.rmtree(work, ignore_errors=True)


def generate_stage(spec: CotSetSpec, store: ArtifactStore, check: Check | None = None) -> StageResult:
    """Build and publish a CoT set (cotsets/<key>); `check()` runs after each teacher reply."""
    from services.generator.build import build_cotset

    return build_once(store, "cotsets", spec.key, lambda work, out: build_cotset(spec, work, out, check=check))


def tiny_model_key(size: str, corpus_from: str | None) -> str:
    """The key of a tiny student of `size` whose tokenizer learnt from CoT set `corpus_from` (None: arith)."""
    return content_key("model", {"tiny": size, "corpus": corpus_from, "version": TINY_VERSION})


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
    corpus_from = None if DATASETS[dataset].generated else cot_key
    key = tiny_model_key(size, corpus_from)

    def build(work: Path, out: Path) -> dict:
        corpus = [str(store.fetch("cotsets", cot_key) / "cot.jsonl")] if corpus_from else None
        init_tiny(out, corpus=corpus, size=size)
        return {"tiny": size, "corpus": corpus_from}

    build_once(store, "models", key, build, attempt=True)
    return str(store.fetch("models", key)), artifact_ref(key)


def base_in_store(store: ArtifactStore, checkpoint: Path) -> str | None:
    """This store's copy of a LoRA checkpoint's base, when the base is a store student (`models/<key>`)."""
    from services.trainer.models import ARTIFACT_REF, read_info

    info = read_info(checkpoint)
    if info is None or not ARTIFACT_REF.match(info.base_model):
        return None
    return str(store.fetch("models", info.base_model.split("/", 1)[1]))


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

    def build(work: Path, out: Path) -> dict | StageResult:
        pairs = read_training_pairs(store.fetch("cotsets", spec.cot.key))
        model_id, base_ref = student_base(spec.student, spec.cot.key, spec.cot.dataset.name, store)
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
            return StageResult(kind="checkpoints", key=spec.key, cached=False, manifest={}, stopped=summary)
        return {
            "student": spec.student.name,
            "base_model": spec.student.model,
            "cot_key": spec.cot.key,
            "train": summary,
        }

    return build_once(store, "checkpoints", spec.key, build)


def evaluate_stage(spec: EvalSpec, store: ArtifactStore, device: str = "auto", check: Check | None = None) -> StageResult:
    """Score the checkpoint on the test split and publish evals/<key>; `check()` runs every batch."""
    from services.evaluator.evaluate import evaluate_model
    from shared.datasets.splits import load_split

    def build(work: Path, out: Path) -> dict:
        questions = load_split(spec.dataset, "test")
        if spec.evaluation.test_size:
            questions = questions[: spec.evaluation.test_size]
        ckpt = store.fetch("checkpoints", spec.checkpoint.key)
        metrics = evaluate_model(
            ckpt,
            questions,
            out,
            spec.evaluation,
            template=spec.checkpoint.student.template,
            device_setting=device,
            trust_remote_code=spec.checkpoint.student.trust_remote_code,
            check=check,
            base_path=base_in_store(store, ckpt),
        )
        return {"checkpoint_key": spec.checkpoint.key, "dataset": spec.dataset.name, "metrics": metrics}

    return build_once(store, "evals", spec.key, build, keep_out=True)
