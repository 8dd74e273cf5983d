"""Dataset loaders: local files (reference data), hub access through a local mirror, errors."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from shared.datasets import files
from shared.datasets.base import DatasetError, TaskType, parse_choices, question_id, render_choices
from shared.datasets.math_ds import SUBJECTS
from shared.datasets.registry import DATASET_NAMES, canonical_name, load_questions, task_type

TEST_FILES = [
    ("svamp", "test/svamp_test.json", 300),
    ("gsm8k", "test/gsm8k_test.jsonl", 1319),
    ("aqua", "test/aqua_test.jsonl", 254),
    ("math", "test/math500_test.jsonl", 500),
    ("csqa", "test/csqa_test.json", 1221),
    ("openbookqa", "test/openbookQA_test.json", 500),
    ("strategyqa", "test/strategyQA_test.json", 290),
    ("gsm8k", "train/gsm8k_train.jsonl", 7473),
    ("aqua", "train/aqua_dev.jsonl", 254),
]


@pytest.mark.parametrize(("name", "rel", "count"), TEST_FILES)
def test_reference_files_load(shared_data: Path, name: str, rel: str, count: int) -> None:
    qs = load_questions(name, data_file=shared_data / rel)
    assert len(qs) == count
    assert len({q.id for q in qs}) == count
    task = task_type(name)
    for q in qs:
        assert q.task is task and q.text and q.gold
        assert q.id == question_id(name, q.text)
        if task is TaskType.CHOICE:
            assert q.choices and q.gold in "ABCDE"[: len(q.choices)]
        if task is TaskType.YESNO:
            assert q.gold in ("True", "False")
        if task is TaskType.NUMBER:
            float(q.gold)


def test_reference_file_contents(shared_data: Path) -> None:
    svamp = load_questions("svamp", data_file=shared_data / "test/svamp_test.json")
    assert svamp[0].text.startswith("Each pack of dvds costs 76 dollars.") and svamp[0].gold == "51"
    assert svamp[0].rationale == "76.0 - 25.0 = 51.0. The answer is 51.0"
    gsm = load_questions("gsm8k", data_file=shared_data / "test/gsm8k_test.jsonl", limit=1)[0]
    assert gsm.gold == "18" and "<<" not in gsm.rationale and gsm.rationale.endswith("The answer is 18")
    aqua = load_questions("aqua", data_file=shared_data / "test/aqua_test.jsonl", limit=1)[0]
    assert "Answer Choices: (A) 5(√3 + 1) (B)" in aqua.text and aqua.choices[4] == "None of these"
    math = load_questions("math", data_file=shared_data / "test/math500_test.jsonl", limit=1)[0]
    assert math.gold == "\\left( 3, \\frac{\\pi}{2} \\right)"
    csqa = load_questions("csqa", data_file=shared_data / "test/csqa_test.json", limit=1)[0]
    assert csqa.choices == ["bank", "library", "department store", "mall", "new york"] and csqa.gold == "A"


PAPER_GOLD = [
    ("svamp", "SVAMP_only_ans.json", 700),
    ("svamp", "svamp_human_annotation.json", 700),
    ("gsm8k", "gsm_train_onlyans.json", 7473),
    ("csqa", "commonsenseQA_onlyans.json", 9740),
    ("openbookqa", "openbookQA_onlyans.json", 4957),
    ("strategyqa", "strategyQA_onlyans.json", 2000),
    ("strategyqa", "stqa_human_annotation.json", 2290),
    ("math", "math_human.json", 1297),
]


@pytest.mark.parametrize(("name", "fname", "count"), PAPER_GOLD)
def test_paper_answer_files_load(shared_data: Path, name: str, fname: str, count: int) -> None:
    qs = load_questions(name, "train", data_file=shared_data / "paper-cot" / fname)
    assert len(qs) == count


def test_paper_aqua_answer_file_has_three_unanswerable_items(shared_data: Path) -> None:
    path = shared_data / "paper-cot/aqua_only_ans.json"
    with pytest.raises(DatasetError, match=r"^aqua_only_ans.json: index 6365: field 'output'"):
        load_questions("aqua", data_file=path)
    assert len(load_questions("aqua", data_file=path, skip_invalid=True)) == 6940 - 3


def test_ids_join_across_files(shared_data: Path) -> None:
    only = load_questions("svamp", data_file=shared_data / "paper-cot/SVAMP_only_ans.json")
    human = load_questions("svamp", data_file=shared_data / "paper-cot/svamp_human_annotation.json")
    assert [q.id for q in only] == [q.id for q in human]
    assert [q.gold for q in only] == [q.gold for q in human]
    assert human[0].rationale.endswith("The answer is 145.0")


def test_paper_math_file_gold_is_repaired(shared_data: Path) -> None:
    qs = load_questions("math", data_file=shared_data / "paper-cot/math_gemini_level1_ranked.json")
    assert all(q.gold.count("{") == q.gold.count("}") for q in qs)
    assert qs[0].gold == "52" and qs[0].rationale.endswith("The answer is 52")


# --- errors -------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_missing_field_names_file_and_line(tmp_path: Path) -> None:
    lines = [json.dumps({"question": "q1", "answer": "x #### 1"}), "", json.dumps({"question": "q2"})]
    f = _write(tmp_path / "gsm8k_test.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as err:
        load_questions("gsm8k", data_file=f)
    assert str(err.value) == "gsm8k_test.jsonl: line 3: missing field 'answer'"


@pytest.mark.parametrize(
    ("name", "items", "message"),
    [
        (
            "svamp",
            [{"Body": "b", "Question": "q", "Answer": 1}, {"Body": "b", "Question": "q"}],
            "x.json: index 1: missing field 'Answer'",
        ),
        (
            "gsm8k",
            [{"question": "q", "answer": "no final"}],
            "x.json: index 0: field 'answer': no '#### <number>'",
        ),
        (
            "aqua",
            [{"question": "q", "options": ["A)1", "B)2"], "correct": "F"}],
            "x.json: index 0: field 'correct'",
        ),
        ("csqa", [{"instruction": "no options here", "label": "A"}], "x.json: index 0: field 'instruction'"),
        ("strategyqa", [{"instruction": "q?", "label": "maybe"}], "x.json: index 0: field 'label'"),
        ("math", [{"problem": "p", "solution": "no box"}], "x.json: index 0: field 'solution'"),
        (
            "openbookqa",
            [{"instruction": "Q: x Answer choices: A: a, B: b"}],
            "x.json: index 0: missing field 'output'",
        ),
        ("svamp", [["not", "an", "object"]], "x.json: index 0: expected an object"),
    ],
)
def test_malformed_items(tmp_path: Path, name: str, items: list, message: str) -> None:
    f = _write(tmp_path / "x.json", json.dumps(items))
    with pytest.raises(DatasetError) as err:
        load_questions(name, data_file=f)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_invalid_json_and_missing_file(tmp_path: Path) -> None:
    f = _write(tmp_path / "bad.jsonl", '{"question": "q", "answer": "#### 1"}\n{oops\n')
    with pytest.raises(DatasetError, match=r"^bad.jsonl: line 2: invalid JSON"):
        load_questions("gsm8k", data_file=f)
    with pytest.raises(DatasetError, match="file not found"):
        load_questions("gsm8k", data_file=tmp_path / "nope.json")


# --- registry -----------------------------------------------------------------------------------


def test_registry() -> None:
    assert set(DATASET_NAMES) == {
        "svamp",
        "gsm8k",
        "aqua",
        "math",
        "csqa",
        "openbookqa",
        "strategyqa",
        "arith",
    }
    assert task_type("math500") is TaskType.MATH
    assert task_type("StrategyQA") is TaskType.YESNO
    assert task_type("arith") is TaskType.NUMBER
    assert canonical_name("obqa") == "openbookqa"
    with pytest.raises(DatasetError, match="unknown dataset"):
        task_type("imagenet")
    with pytest.raises(DatasetError, match="needs a data file"):
        load_questions("svamp", source="file")
    with pytest.raises(DatasetError, match="unknown source"):
        load_questions("svamp", source="web")


def test_choice_render_parse_roundtrip() -> None:
    opts = ["make calls", "quit eating lunch out, then save", "buy less", "dine"]
    for style in ("qa", "paren", "lines"):
        assert parse_choices(render_choices("Which one?", opts, style)) == opts
    assert parse_choices("no options") is None


# --- hub (through a local mirror) ---------------------------------------------------------------


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture()
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "mirror"
    monkeypatch.setenv(files.MIRROR_ENV, str(root))
    _jsonl(
        root / "ChilleD__SVAMP/test.jsonl",
        [
            {
                "ID": "chal-1",
                "Body": "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack",
                "Question": "How much do you have to pay to buy each pack?",
                "Equation": "( 76.0 - 25.0 )",
                "Answer": 51.0,
            }
        ],
    )
    _jsonl(
        root / "openai__gsm8k__main/train.jsonl", [{"question": "Q?", "answer": "2 + 2 = <<2+2=4>>4\n#### 4"}]
    )
    _jsonl(
        root / "deepmind__aqua_rat__raw/validation.jsonl",
        [
            {
                "question": "1+1?",
                "options": ["A)1", "B)2", "C)3", "D)4", "E)5"],
                "rationale": "1+1=2",
                "correct": "B",
            }
        ],
    )
    for subject in SUBJECTS:
        _jsonl(
            root / f"EleutherAI__hendrycks_math__{subject}/test.jsonl",
            [
                {
                    "problem": f"{subject}: what is 1/2?",
                    "level": "Level 1",
                    "type": subject,
                    "solution": "It is $\\boxed{\\frac{1}{2}}$.",
                }
            ],
        )
    _jsonl(
        root / "tau__commonsense_qa/validation.jsonl",
        [
            {
                "id": "x",
                "question": "Where is money kept?",
                "question_concept": "money",
                "choices": {
                    "label": ["A", "B", "C", "D", "E"],
                    "text": ["bank", "tree", "sky", "sea", "shoe"],
                },
                "answerKey": "A",
            }
        ],
    )
    return root


def test_hub_mirror_jsonl(mirror: Path) -> None:
    svamp = load_questions("svamp", "test")
    assert svamp[0].gold == "51" and svamp[0].text.endswith("How much do you have to pay to buy each pack?")
    gsm = load_questions("gsm8k", "train")
    assert gsm[0].gold == "4" and gsm[0].rationale == "2 + 2 = 4\nThe answer is 4"
    aqua = load_questions("aqua", "dev")
    assert aqua[0].text == "1+1? Answer Choices: (A) 1 (B) 2 (C) 3 (D) 4 (E) 5" and aqua[0].gold == "B"
    math = load_questions("math", "test")
    assert len(math) == 7 and {q.gold for q in math} == {"\\frac{1}{2}"}
    csqa = load_questions("csqa", "test")  # the labelled validation split
    assert csqa[0].text == "Q: Where is money kept? Answer choices: A: bank, B: tree, C: sky, D: sea, E: shoe"
    assert csqa[0].choices[0] == "bank" and csqa[0].gold == "A"
    assert len(load_questions("math", "test", limit=3)) == 3


def test_hub_mirror_missing_split(mirror: Path) -> None:
    with pytest.raises(DatasetError, match=r"ChilleD/SVAMP\[train\]: not found in the mirror"):
        load_questions("svamp", "train")


def test_hub_mirror_save_to_disk_matches_paper_file(mirror: Path, shared_data: Path) -> None:
    datasets = pytest.importorskip("datasets")
    row = {
        "id": "7-980",
        "question_stem": "A person wants to start saving money so that they can afford a nice vacation at the "
        "end of the year. After looking over their budget and expenses, they decide the best way to save "
        "money is to",
        "choices": {
            "text": [
                "make more phone calls",
                "quit eating lunch out",
                "buy less with monopoly money",
                "have lunch with friends",
            ],
            "label": ["A", "B", "C", "D"],
        },
        "answerKey": "B",
    }
    datasets.Dataset.from_list([row]).save_to_disk(str(mirror / "allenai__openbookqa__main/test"))
    hub = load_questions("openbookqa", "test")
    local = load_questions("openbookqa", data_file=shared_data / "test/openbookQA_test.json", limit=1)
    assert hub[0].id == local[0].id and hub[0].gold == local[0].gold == "B"
    assert hub[0].choices == local[0].choices


def test_strategyqa_release_from_mirror(mirror: Path) -> None:
    rows = [
        {"qid": str(i), "question": f"Question {i}?", "answer": i % 2 == 0, "facts": [f"Fact {i}."]}
        for i in range(2003)
    ]
    with zipfile.ZipFile(mirror / "strategyqa_dataset.zip", "w") as zf:
        zf.writestr("strategyqa_train.json", json.dumps(rows))
    train, test = load_questions("strategyqa", "train"), load_questions("strategyqa", "test")
    assert len(train) == 2000 and len(test) == 3
    assert test[0].text == "Question 2000?" and test[0].gold == "True"
    assert test[1].rationale == "Fact 2001. The answer is False"


def test_hub_failure_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.delenv(files.MIRROR_ENV, raising=False)

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("no network\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DatasetError) as err:
        load_questions("svamp", "test")
    assert str(err.value).startswith(
        "ChilleD/SVAMP[test]: cannot load from the Hugging Face hub (no network)"
    )
    assert files.MIRROR_ENV in str(err.value)
