"""The worker's policy (api_key_env allow-list, data roots, remote code) and safe manifest paths."""

from __future__ import annotations

import os

import pytest

from services.generator.teachers.remote import TeacherError, api_key
from shared.grid import GridError, expand, parse_grid
from shared.paths import UnsafePath, member_path, under_roots
from shared.policy import PolicyError, api_key_env_allowed, check_teachers, check_worker_spec
from shared.settings import Settings

DEFAULT = ["*_API_KEY", "HF_TOKEN"]


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "TEACHER_API_KEY", "HF_TOKEN"])
def test_default_allow_list_admits_api_keys(name):
    assert api_key_env_allowed(name, DEFAULT)


@pytest.mark.parametrize(
    "name",
    ["COTD_S3_SECRET_KEY", "COTD_REDIS_PASSWORD", "cotd_x_API_KEY", "AWS_SECRET_ACCESS_KEY", "HOME", "PATH"],
)
def test_default_allow_list_refuses_everything_else(name):
    assert not api_key_env_allowed(name, DEFAULT)


def test_a_cotd_variable_is_refused_even_by_a_catch_all_pattern():
    assert not api_key_env_allowed("COTD_S3_SECRET_KEY", ["*"])
    assert api_key_env_allowed("AWS_SECRET_ACCESS_KEY", ["*"])


def grid(teachers=None, datasets=None, students=None):
    return parse_grid(
        {
            "name": "p",
            "datasets": datasets or [{"name": "arith", "train_size": 8, "test_size": 4}],
            "teachers": teachers or [{"name": "proc", "kind": "procedural"}],
            "levels": [1],
            "students": students or [{"name": "xs", "model": "tiny:xs"}],
        },
        "p.yaml",
    )


def test_grid_refuses_a_cotd_variable_as_api_key_env():
    t = {
        "name": "o",
        "kind": "openai",
        "model": "m",
        "base_url": "http://x/v1",
        "api_key_env": "COTD_S3_SECRET_KEY",
    }
    with pytest.raises(
        GridError, match=r"^p\.yaml: teachers\[0\]\.api_key_env: COTD_S3_SECRET_KEY is a cotd setting"
    ):
        grid(teachers=[t])


def test_submit_check_and_worker_read_use_the_allow_list(monkeypatch):
    t = {"name": "o", "kind": "openai", "model": "m", "base_url": "http://x/v1", "api_key_env": "MY_TOKEN"}
    g = grid(teachers=[t])
    with pytest.raises(
        PolicyError, match=r"^teacher o: api_key_env MY_TOKEN is not allowed \(COTD_API_KEY_ENV_ALLOW: "
    ):
        check_teachers(g.teachers, Settings())
    check_teachers(g.teachers, Settings(api_key_env_allow="MY_*"))  # the operator may widen it
    monkeypatch.setenv("MY_TOKEN", "secret-value")
    with pytest.raises(PolicyError, match="not allowed") as exc:
        api_key(g.teachers[0])  # the worker's own settings: the default list
    assert "secret-value" not in str(exc.value)


def test_allowed_api_key_env_is_read(monkeypatch):
    t = {"name": "o", "kind": "openai", "model": "m", "base_url": "http://x/v1", "api_key_env": "MY_API_KEY"}
    teacher = grid(teachers=[t]).teachers[0]
    monkeypatch.setenv("MY_API_KEY", "sk-1")
    assert api_key(teacher) == "sk-1"
    monkeypatch.delenv("MY_API_KEY")
    with pytest.raises(TeacherError, match="MY_API_KEY .* is not set"):
        api_key(teacher)


def _recorded(tmp_path, files):
    return grid(
        teachers=[{"name": "rec", "kind": "recorded", "files": files}],
        datasets=[{"name": "svamp", "train_file": str(tmp_path / "data" / "train.json"), "test_size": 4}],
    )


def test_worker_reads_grid_files_only_under_its_data_roots(tmp_path):
    (tmp_path / "data").mkdir()
    cell = expand(_recorded(tmp_path, str(tmp_path / "data" / "rec{level}.json")))[0]
    inside = Settings(data_roots=str(tmp_path / "data"))
    for spec in (cell.cot, cell.checkpoint, cell.evaluation):
        check_worker_spec(spec, inside)
    with pytest.raises(
        PolicyError,
        match=r"^dataset\.train_file: .*train\.json is outside the worker's data roots \(COTD_DATA_ROOTS: unset",
    ):
        check_worker_spec(cell.evaluation, Settings())
    other = Settings(data_roots=os.pathsep.join([str(tmp_path / "elsewhere"), "/nonexistent"]))
    with pytest.raises(PolicyError, match=r"COTD_DATA_ROOTS: .*elsewhere"):
        check_worker_spec(cell.cot, other)


def test_recorded_teacher_file_outside_the_roots_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    cell = expand(_recorded(tmp_path, "/etc/hostname"))[0]
    with pytest.raises(PolicyError, match=r"^teacher rec\.files: /etc/hostname is outside"):
        check_worker_spec(cell.cot, Settings(data_roots=str(tmp_path / "data")))


def test_a_symlink_out_of_a_data_root_is_outside(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "link").symlink_to("/etc")
    assert under_roots(root / "x.json", [root.resolve()])
    assert not under_roots(root / "link" / "hostname", [root.resolve()])
    assert not under_roots(root / ".." / "x.json", [root.resolve()])


def test_local_student_model_is_a_grid_file_too(tmp_path):
    cell = expand(grid(students=[{"name": "loc", "model": str(tmp_path / "model")}]))[0]
    with pytest.raises(PolicyError, match=r"^student loc\.model: "):
        check_worker_spec(cell.checkpoint, Settings())
    check_worker_spec(cell.checkpoint, Settings(data_roots=str(tmp_path)))


def test_trust_remote_code_needs_the_worker_setting():
    cell = expand(grid(students=[{"name": "rc", "model": "org/model", "trust_remote_code": True}]))[0]
    check_worker_spec(cell.cot, Settings())  # generation runs no student code
    for spec in (cell.checkpoint, cell.evaluation):
        with pytest.raises(
            PolicyError, match=r"^student rc: trust_remote_code is not allowed on this worker"
        ):
            check_worker_spec(spec, Settings())
        check_worker_spec(spec, Settings(allow_remote_code=True))


@pytest.mark.parametrize("rel", ["model.safetensors", "sub/dir/file.json", "a.b/c"])
def test_member_path_keeps_relative_paths(tmp_path, rel):
    assert member_path(tmp_path, rel) == tmp_path / rel


@pytest.mark.parametrize(
    "rel", ["/etc/passwd", "../x", "a/../../x", "a/./b", "", "a//b", "a\\..\\b", "nul\x00"]
)
def test_member_path_refuses_escapes(tmp_path, rel):
    with pytest.raises(UnsafePath):
        member_path(tmp_path, rel)


def test_member_path_refuses_a_symlinked_folder(tmp_path):
    (tmp_path / "out").symlink_to(tmp_path.parent)
    with pytest.raises(UnsafePath, match="symlink"):
        member_path(tmp_path, "out/file")


def test_human_teacher_file_and_gguf_student_are_grid_files(tmp_path):
    (tmp_path / "data").mkdir()
    human = {"name": "hum", "kind": "human", "files": str(tmp_path / "private" / "rationales.json")}
    cell = expand(
        grid(teachers=[human], datasets=[{"name": "svamp", "train_file": str(tmp_path / "data" / "t.json")}])
    )[0]
    with pytest.raises(PolicyError, match=r"^teacher hum\.files: .*rationales\.json is outside"):
        check_worker_spec(cell.cot, Settings(data_roots=str(tmp_path / "data")))
    gguf = tmp_path / "data" / "m.gguf"
    gguf.write_bytes(b"GGUF")
    cell = expand(grid(students=[{"name": "g", "model": str(gguf)}]))[0]
    check_worker_spec(cell.checkpoint, Settings(data_roots=str(tmp_path / "data")))
    with pytest.raises(PolicyError, match=r"^student g\.model: .*m\.gguf is outside"):
        check_worker_spec(cell.checkpoint, Settings(data_roots=str(tmp_path / "elsewhere")))
