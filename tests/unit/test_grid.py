"""Grid parsing, expansion, content keys, and one-line errors for malformed grid files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from shared.cli import cli
from shared.grid import GridError, expand, load_grid
from tests.conftest import REPO_ROOT

QUICKSTART = REPO_ROOT / "examples" / "quickstart.yaml"

BASE = {
    "name": "g",
    "datasets": [{"name": "arith", "train_size": 100, "test_size": 10}],
    "teachers": [{"name": "proc", "kind": "procedural"}, {"name": "ans", "kind": "answer-only"}],
    "levels": [1, 3],
    "formats": ["cot", "symbolic"],
    "students": [{"name": "a", "model": "tiny:xs"}, {"name": "b", "model": "tiny:s", "method": "full"}],
    "seeds": [1, 2],
}


def write(tmp_path: Path, data, name: str = "grid.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def with_(**changes):
    import copy

    d = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = d
        parts = path.split("__")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        last = parts[-1]
        if value is KeyError:
            del node[last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
    return d


def test_quickstart_parses_and_expands():
    grid = load_grid(QUICKSTART)
    cells = expand(grid)
    # procedural x 2 levels x 1 format + answer-only, x 1 student x 3 seeds (pooled by the report)
    assert len(grid.seeds) >= 3
    assert len(cells) == 9
    assert len({c.cot.key for c in cells}) == 3  # a CoT set is shared by the seeds
    assert len({c.key for c in cells}) == 9
    assert {c.level for c in cells} == {1, 3, None}
    answer_only = [c for c in cells if c.teacher_kind == "answer-only"]
    assert all(c.level is None and c.format is None for c in answer_only)


def test_expansion_counts_and_order(tmp_path):
    cells = expand(load_grid(write(tmp_path, BASE)))
    # proc: 2 levels x 2 formats = 4 sets; ans: 1 set -> 5 sets x 2 students x 2 seeds
    assert len(cells) == 20
    assert len({c.cot.key for c in cells}) == 5
    assert len({c.checkpoint.key for c in cells}) == 20
    assert [c.label() for c in cells] == [c.label() for c in expand(load_grid(write(tmp_path, BASE)))]


def test_keys_depend_on_what_determines_the_artifact(tmp_path):
    base = {c.label(): c for c in expand(load_grid(write(tmp_path, BASE)))}
    renamed = with_(teachers__0__name="proc2")
    other = {c.label().replace("proc2", "proc"): c for c in expand(load_grid(write(tmp_path, renamed)))}
    # a teacher's label does not determine its output
    assert all(other[k].cot.key == base[k].cot.key for k in base)
    lr = with_(training={"lr": 1e-3})
    changed = {c.label(): c for c in expand(load_grid(write(tmp_path, lr)))}
    assert all(changed[k].cot.key == base[k].cot.key for k in base)
    assert all(changed[k].checkpoint.key != base[k].checkpoint.key for k in base)
    ev = with_(evaluation={"max_new_tokens": 7})
    changed = {c.label(): c for c in expand(load_grid(write(tmp_path, ev)))}
    assert all(changed[k].checkpoint.key == base[k].checkpoint.key for k in base)
    assert all(changed[k].key != base[k].key for k in base)


def test_student_overrides_apply_to_that_student_only(tmp_path):
    data = with_(students__1__training={"lr": 0.5, "max_steps": 3})
    cells = expand(load_grid(write(tmp_path, data)))
    a = next(c for c in cells if c.student == "a")
    b = next(c for c in cells if c.student == "b")
    assert a.checkpoint.training.lr == 5e-5 and a.checkpoint.training.max_steps is None
    assert b.checkpoint.training.lr == 0.5 and b.checkpoint.training.max_steps == 3


def test_keys_are_stable_across_processes(tmp_path):
    path = write(tmp_path, BASE)
    code = "import sys; from shared.grid import load_grid, expand; print(' '.join(c.key for c in expand(load_grid(sys.argv[1]))))"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code, str(path)],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed), "PATH": ""},
            cwd=REPO_ROOT,
        ).stdout
        for seed in (1, 2)
    }
    assert len(outs) == 1
    assert outs.pop().split() == [c.key for c in expand(load_grid(path))]


MALFORMED = [
    (with_(students__1__method="adam"), "grid.yaml: students[1].method: must be one of full, lora, qlora"),
    (with_(name=KeyError), "grid.yaml: name: required field is missing"),
    (with_(levels=[0, 3]), "grid.yaml: levels: levels must be between 1 and 6, got 0"),
    (with_(levels=[3, 3]), "grid.yaml: levels: levels repeat"),
    (with_(colour="red"), "grid.yaml: colour: unknown field"),
    (with_(datasets__0__name="imagenet"), "grid.yaml: datasets[0].name: must be one of svamp, gsm8k"),
    (
        with_(teachers__1__kind="oracle"),
        "grid.yaml: teachers[1].kind: must be one of procedural, answer-only, human, recorded, tgi, openai",
    ),
    (with_(formats=["cot", "xml"]), "grid.yaml: formats[1]: must be one of cot, subquestion, rar, symbolic"),
    (with_(training={"lr": -1}), "grid.yaml: training.lr: Input should be greater than 0"),
    (
        with_(students__0__training={"epochs": 0}),
        "grid.yaml: students[0].training.epochs: Input should be greater than 0",
    ),
    (with_(seeds=[]), "grid.yaml: seeds: List should have at least 1 item"),
    (
        with_(students=[{"name": "a", "model": "x"}, {"name": "a", "model": "y"}]),
        "grid.yaml: students: duplicate name 'a'",
    ),
    (
        with_(teachers=[{"name": "r", "kind": "recorded"}]),
        "grid.yaml: teachers[0].files: required for a recorded teacher",
    ),
    (
        with_(teachers=[{"name": "t", "kind": "tgi"}]),
        "grid.yaml: teachers[0].model: required for a tgi teacher",
    ),
    (
        with_(evaluation={"batch_size": "many"}),
        "grid.yaml: evaluation.batch_size: Input should be a valid integer",
    ),
    (
        with_(students__0__trust_remote_code="perhaps"),
        "grid.yaml: students[0].trust_remote_code: Input should be a valid boolean",
    ),
    ("name: g\ndatasets: [\n", "grid.yaml: line 3: invalid YAML"),
    ("- just\n- a list\n", "grid.yaml: the grid must be a mapping of fields, got list"),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED, ids=[m[1].split(": ")[1] for m in MALFORMED])
def test_malformed_grid_gives_one_line_naming_file_and_field(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(GridError) as exc:
        load_grid(path)
    text = str(exc.value)
    assert "\n" not in text
    assert text.startswith(message), text


def test_missing_grid_file(tmp_path):
    with pytest.raises(GridError, match=r"^nope\.yaml: no such file$"):
        load_grid(tmp_path / "nope.yaml")


def test_cli_exits_nonzero_with_the_one_line(tmp_path):
    path = write(tmp_path, with_(students__1__method="adam"))
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert result.output.strip() == "Error: grid.yaml: students[1].method: must be one of full, lora, qlora"
    assert not (tmp_path / "out").exists()


def test_relative_paths_resolve_against_the_grid_folder(tmp_path, monkeypatch):
    sub = tmp_path / "grids"
    sub.mkdir()
    data = with_(
        teachers=[{"name": "r", "kind": "recorded", "files": "rec_level{level}.json"}],
        datasets=[{"name": "svamp", "train_file": "data/train.json", "test_file": "../test.json"}],
        students=[{"name": "hub", "model": "org/model"}, {"name": "local", "model": "./ckpt"}],
    )
    monkeypatch.chdir(tmp_path)  # not the grid's folder
    grid = load_grid(write(sub, data))
    assert grid.teachers[0].files == str(sub / "rec_level{level}.json")
    assert grid.datasets[0].train_file == str(sub / "data" / "train.json")
    assert grid.datasets[0].test_file == str(tmp_path / "test.json")
    assert grid.students[0].model == "org/model"
    assert grid.students[1].model == str(sub / "ckpt")
