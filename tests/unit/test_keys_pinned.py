"""Artifact keys pinned: the keys of a few fixed specs, computed once and hard-coded.

A refactor that changes any of them would orphan every published artifact; this test fails first.
The keys of server teachers (openai, tgi) include `PROMPT_VERSION`: a prompt change moves them on
purpose, and their rows here are updated with it (now p4: worked examples re-picked so that lengths rise with the level).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.grid import expand, load_grid, parse_grid

ROOT = Path(__file__).resolve().parents[2]

SYNTHETIC = {
    "name": "pin",
    "datasets": [{"name": "arith", "train_size": 40, "test_size": 10}, {"name": "svamp", "train_size": 8}],
    "teachers": [
        {"name": "proc", "kind": "procedural"},
        {"name": "ans", "kind": "answer-only"},
        {"name": "gpt", "kind": "openai", "model": "gpt-4o-mini", "base_url": "http://x/v1"},
    ],
    "levels": [1, 6],
    "formats": ["cot"],
    "students": [
        {"name": "tiny", "model": "tiny:xs"},
        {"name": "q", "model": "Qwen/Qwen2.5-0.5B", "method": "lora"},
    ],
    "seeds": [100],
}

# label -> (cot key, checkpoint key, eval key)
PINNED = {
    "arith/proc/L1/cot/tiny/s100": (
        "e7015a9b6438cc6078a4a24d",
        "f609b9025f37227df37a5fab",
        "3cd9a6017e99e443c27a93ff",
    ),
    "arith/proc/L6/cot/q/s100": (
        "58c2b8a284ce06315ab6d985",
        "855a8b8914681480d5106d24",
        "d3dfa7f2a3c4457fa3d9a13b",
    ),
    "arith/ans/-/-/tiny/s100": (
        "5657d3c50f86a1b6d95a19b5",
        "72ee74d7d2ace779d6740805",
        "43ffaef12d651ac0708c01a5",
    ),
    "arith/gpt/L6/cot/q/s100": (
        "64c8b414afbaec1dc2d783b6",
        "b1c3b7a69ab74cdb0f77e84e",
        "69919e057fd432e81346cb1b",
    ),
    "svamp/ans/-/-/q/s100": (
        "483f05f611f2b0543f16dabf",
        "e18129d47ecf1fb8cc15365a",
        "81b24f39e74931ac0a1abf01",
    ),
    "svamp/gpt/L1/cot/tiny/s100": (
        "f7c41c822cf8f2e5c8ade7ab",
        "29f807b4193e5be940d4a7c0",
        "be09880c5e494a4280e5a5b8",
    ),
}
QUICKSTART = {
    "arith/procedural/L1/cot/tiny-s/s100": (
        "5214a8163302f0cde765fd1d",
        "edbe40690e8520d31e497f84",
        "dc4c28688bb5823070a4f887",
    ),
    "arith/procedural/L1/cot/tiny-s/s102": (
        "5214a8163302f0cde765fd1d",
        "a5f1be212f4d534a1c640338",
        "0b9ca39e289044289f916ccd",
    ),
}
FILES = {
    "gsm8k/rec/L1/cot/s/s1": (
        "329e35f1a2fbd2d711b10f26",
        "10725165705a1c866172394f",
        "a18cb9117d3d8b05e09f0041",
    ),
    "gsm8k/tg/L1/cot/s/s1": (
        "6f9ff883356f6d724aaa501a",
        "095b6dc33bb9c319b097c942",
        "688d356c84634c2744ebd384",
    ),
}


def _keys(cells) -> dict[str, tuple[str, str, str]]:
    return {c.label(): (c.cot.key, c.checkpoint.key, c.evaluation.key) for c in cells}


def _check(got: dict[str, tuple[str, str, str]], pinned: dict[str, tuple[str, str, str]]) -> None:
    for label, keys in pinned.items():
        assert got[label] == keys, f"{label}: artifact keys drifted"


@pytest.mark.parametrize("datasets", [[0], [0, 1]])
def test_synthetic_grid_keys(datasets: list[int]) -> None:
    grid = dict(SYNTHETIC, datasets=[SYNTHETIC["datasets"][i] for i in datasets])
    if len(datasets) > 1:  # procedural writes only arith
        grid["teachers"] = SYNTHETIC["teachers"][1:]
    got = _keys(expand(parse_grid(grid)))
    _check(got, {k: v for k, v in PINNED.items() if k in got})


def test_quickstart_keys() -> None:
    _check(_keys(expand(load_grid(ROOT / "examples" / "quickstart.yaml"))), QUICKSTART)


def test_recorded_file_and_server_teacher_keys(tmp_path: Path) -> None:
    (tmp_path / "rec_L1_cot.json").write_text('[{"q": "1+1", "a": "2"}]\n')
    grid = {
        "name": "pin2",
        "datasets": [{"name": "gsm8k", "train_size": 8, "test_size": 4, "skip_invalid": True}],
        "teachers": [
            {"name": "rec", "kind": "recorded", "files": str(tmp_path / "rec_L{level}_{format}.json")},
            {
                "name": "tg",
                "kind": "tgi",
                "model": "m/x",
                "revision": "abc",
                "route": "generate",
                "temperature": 0.7,
                "top_p": 0.9,
            },
        ],
        "levels": [1],
        "students": [{"name": "s", "model": "gpt2", "template": "alpaca"}],
        "seeds": [1],
    }
    _check(_keys(expand(parse_grid(grid))), FILES)


def test_tiny_model_keys() -> None:
    from shared.orchestration.stages import tiny_model_key

    assert tiny_model_key("s", None) == "b681f0c834ce317168b1fedf"
    assert tiny_model_key("xs", "e7015a9b6438cc6078a4a24d") == "89f81e1cd867baf1886042bc"


def test_padding_free_enters_the_checkpoint_key_only_when_set() -> None:
    def keys(setting: str | None) -> set[str]:
        data = dict(SYNTHETIC, datasets=SYNTHETIC["datasets"][:1])
        if setting:
            data["training"] = {"padding_free": setting}
        return {cell.checkpoint.key for cell in expand(parse_grid(data))}

    assert keys("auto") == keys(None)
    assert keys("off") != keys(None) and keys("on") != keys(None) and keys("on") != keys("off")
