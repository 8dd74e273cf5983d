"""Bounds and names checked at submit (issue #18.8 and #18.9): one line naming the grid file and the field."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from shared.cli import cli
from shared.config import MAX_ITEMS, MAX_SEED, MAX_STEPS, MAX_TOKENS
from shared.grid import GridError, load_grid

GRID = """\
name: {name}
datasets: [{{name: arith, train_size: {train_size}, test_size: 10}}]
teachers: [{{name: {teacher}, kind: procedural}}]
levels: [1]
students: [{{name: {student}, model: "tiny:xs"}}]
training: {{max_steps: {max_steps}, micro_batch_size: {micro}, epochs: {epochs}, lr: {lr}}}
evaluation: {{max_new_tokens: {max_new_tokens}, batch_size: {eval_batch}}}
seeds: [{seed}]
"""
OK = {
    "name": "g",
    "train_size": 100,
    "teacher": "proc",
    "student": "xs",
    "max_steps": 20,
    "micro": 8,
    "epochs": 3,
    "lr": 0.001,
    "max_new_tokens": 40,
    "eval_batch": 16,
    "seed": 100,
}


def load(tmp_path, **changes):
    path = tmp_path / "bounds.yaml"
    path.write_text(GRID.format(**(OK | changes)))
    return load_grid(path)


def test_the_base_grid_is_valid(tmp_path):
    grid = load(tmp_path)
    assert grid.training.max_steps == 20 and grid.seeds == [100]


def test_the_largest_allowed_values_pass(tmp_path):
    grid = load(
        tmp_path, max_steps=MAX_STEPS, train_size=MAX_ITEMS, max_new_tokens=MAX_TOKENS, seed=MAX_SEED - 1
    )
    assert grid.training.max_steps == MAX_STEPS and grid.seeds == [MAX_SEED - 1]


BOUNDS = [
    ({"max_steps": "1.0e+20"}, "training.max_steps: "),  # a YAML float: too large for an integer
    ({"max_steps": 10**20}, f"training.max_steps: Input should be less than or equal to {MAX_STEPS}"),
    ({"max_steps": "1e20"}, "training.max_steps: Input should be a valid integer"),
    ({"train_size": "1.0e+12"}, f"datasets[0].train_size: Input should be less than or equal to {MAX_ITEMS}"),
    ({"train_size": 10**12}, f"datasets[0].train_size: Input should be less than or equal to {MAX_ITEMS}"),
    (
        {"max_new_tokens": "1.0e+9"},
        f"evaluation.max_new_tokens: Input should be less than or equal to {MAX_TOKENS}",
    ),
    (
        {"max_new_tokens": 10**9},
        f"evaluation.max_new_tokens: Input should be less than or equal to {MAX_TOKENS}",
    ),
    ({"seed": 2**70}, f"seeds[0]: Input should be less than {MAX_SEED}"),
    ({"seed": 2**32}, f"seeds[0]: Input should be less than {MAX_SEED}"),
    ({"seed": -1}, "seeds[0]: Input should be greater than or equal to 0"),
    ({"micro": 10**6}, "training.micro_batch_size: Input should be less than or equal to 65536"),
    ({"eval_batch": 10**6}, "evaluation.batch_size: Input should be less than or equal to 65536"),
    ({"epochs": 10**6}, "training.epochs: Input should be less than or equal to 1000"),
    ({"lr": 5}, "training.lr: Input should be less than or equal to 1"),
]


@pytest.mark.parametrize(
    ("changes", "message"), BOUNDS, ids=[f"{next(iter(c))}={next(iter(c.values()))}" for c, _ in BOUNDS]
)
def test_out_of_bounds_values_are_refused_in_one_line(tmp_path, changes, message):
    with pytest.raises(GridError) as exc:
        load(tmp_path, **changes)
    text = str(exc.value)
    assert "\n" not in text
    assert text.startswith(f"bounds.yaml: {message}"), text


def test_a_student_override_has_the_same_bounds(tmp_path):
    path = tmp_path / "over.yaml"
    path.write_text(
        GRID.format(**OK).replace('model: "tiny:xs"', 'model: "tiny:xs", training: {max_steps: 100000000000}')
    )
    with pytest.raises(
        GridError,
        match=r"^over\.yaml: students\[0\]\.training\.max_steps: Input should be less than or equal",
    ):
        load_grid(path)


BAD_NAMES = ["a/b", "a\x00b", "a\nb", "tab\tname", "esc\x1b[31m", "", " lead", "x" * 65, "../up", ".hidden"]


@pytest.mark.parametrize("bad", BAD_NAMES, ids=repr)
@pytest.mark.parametrize("field", ["name", "teacher", "student"])
def test_names_with_slash_nul_newline_or_control_chars_are_refused(tmp_path, field, bad):
    path = tmp_path / "names.yaml"
    path.write_text(GRID.format(**(OK | {field: json.dumps(bad)})))  # a JSON string is a YAML scalar
    with pytest.raises(GridError) as exc:
        load_grid(path)
    text = str(exc.value)
    where = {"name": "name", "teacher": "teachers[0].name", "student": "students[0].name"}[field]
    assert "\n" not in text
    assert text.startswith(f"names.yaml: {where}: "), text
    assert "is not a valid name" in text


@pytest.mark.parametrize("good", ["gpt-4o", "llama-3.2-1b", "Qwen2.5_7B+lora", "a"])
def test_ordinary_names_pass(tmp_path, good):
    assert load(tmp_path, teacher=json.dumps(good), student=good).teachers[0].name == good


def test_cli_prints_the_bound_error_and_exits_1(tmp_path):
    path = tmp_path / "bounds.yaml"
    path.write_text(GRID.format(**(OK | {"max_steps": 10**20})))
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert (
        result.output.strip()
        == f"Error: bounds.yaml: training.max_steps: Input should be less than or equal to {MAX_STEPS}"
    )
    assert not (tmp_path / "out").exists()
