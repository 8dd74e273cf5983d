"""The prompt library: six levels x four formats per task type; length guidance grows with the level."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.generator.prompts import (
    FORMATS,
    LEVEL_GUIDES,
    LEVELS,
    PROMPT_VERSION,
    build_messages,
    system_prompt,
)
from services.generator.stats import cot_stats
from shared.datasets.base import TaskType, make_question
from shared.grid import prompt_version


def test_version_is_part_of_the_key() -> None:
    assert PROMPT_VERSION == "p4" and prompt_version("tgi") == prompt_version("openai") == PROMPT_VERSION


@pytest.mark.parametrize("task", list(TaskType))
def test_every_prompt_asks_for_the_answer_sentence(task: TaskType) -> None:
    texts = {(lv, f): system_prompt(task, lv, f) for lv in LEVELS for f in FORMATS}
    assert len(set(texts.values())) == len(LEVELS) * len(FORMATS)
    for (lv, _), t in texts.items():
        assert '"The answer is X"' in t and f"level {lv} of 6" in t
    answer = {
        TaskType.NUMBER: "number",
        TaskType.CHOICE: "letter",
        TaskType.YESNO: "True or False",
        TaskType.MATH: "LaTeX",
    }
    assert answer[task] in texts[(1, "cot")]


def test_detail_guidance_grows_with_level() -> None:
    words = [(LEVEL_GUIDES[lv].min_words, LEVEL_GUIDES[lv].max_words) for lv in LEVELS]
    steps = [(LEVEL_GUIDES[lv].min_steps, LEVEL_GUIDES[lv].max_steps) for lv in LEVELS]
    assert all(a < b for a, b in zip(words, words[1:], strict=False))  # tuples compare element-wise
    assert all(a[0] <= b[0] and a[1] <= b[1] and a != b for a, b in zip(steps, steps[1:], strict=False))
    target = [
        int(re.search(r"about (\d+) to (\d+) words", system_prompt(TaskType.YESNO, lv, "rar")).group(2))
        for lv in LEVELS
    ]
    assert target == sorted(target) and target[0] < target[-1]
    assert "check" in system_prompt(TaskType.NUMBER, 6, "cot") and "single sentence" in system_prompt(
        TaskType.NUMBER, 1, "cot"
    )


def test_formats_and_messages() -> None:
    q = make_question(
        "openbookqa", "Q: The sun is? Answer choices: A: hot, B: cold", "A", TaskType.CHOICE, ["hot", "cold"]
    )
    msgs = build_messages(q, 3, "subquestion")
    assert [m["role"] for m in msgs] == ["system", "user"] and msgs[1]["content"] == q.text
    assert "sub-question" in msgs[0]["content"]
    assert "rephrase" in system_prompt(TaskType.CHOICE, 3, "rar")
    assert "variables" in system_prompt(TaskType.CHOICE, 3, "symbolic")
    with pytest.raises(ValueError):
        system_prompt(TaskType.NUMBER, 7, "cot")
    with pytest.raises(ValueError):
        system_prompt(TaskType.NUMBER, 3, "bullet")


PAPER_LEVEL_FILES = {
    "svamp/gpt-4o": "SVAMP_ChatGPT_level{}_ranked.json",
    "svamp/gemini": "SVAMP_gemini_level{}_ranked.json",
    "strategyqa/gpt-4o": "strategyQA_chatgpt_level_{}_ranked.json",
    "strategyqa/gemini": "stqa_gemini_level{}_ranked.json",
    "strategyqa/llama": "stqa_llama_level{}_ranked.json",
    "openbookqa/gpt-4o": "openbookQA_chatgpt_level_{}_ranked.json",
}


@pytest.mark.parametrize("which", sorted(PAPER_LEVEL_FILES))
def test_paper_mean_words_grow_with_level(shared_data: Path, which: str) -> None:
    from shared.cotset import read_cot_file

    dataset = which.split("/")[0]
    means = []
    for lv in LEVELS:
        recs = read_cot_file(shared_data / "paper-cot" / PAPER_LEVEL_FILES[which].format(lv), dataset)
        means.append(cot_stats(recs)["mean_words"])
    assert all(b > a for a, b in zip(means, means[1:], strict=False)), means
    assert means[-1] > 1.5 * means[0]
    if which == "svamp/gpt-4o":  # the design's figures: 35 words at level 1, 81 at level 6
        assert round(means[0]) == 35 and round(means[-1]) == 81


def test_a_worked_example_at_the_same_level_comes_before_the_question() -> None:
    from services.generator.exemplars import EXEMPLARS
    from services.generator.prompts import build_messages
    from shared.datasets.base import Question

    q = Question(id="q1", text="Tom has 3 apples and buys 4. How many now?", gold="7", task=TaskType.NUMBER)
    ex = EXEMPLARS[TaskType.NUMBER]
    words = []
    for lv in LEVELS:
        msgs = build_messages(q, lv, "cot")
        assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"] and msgs[-1][
            "content"
        ] == q.text
        assert msgs[2]["content"] == ex.rationales[lv] and msgs[2]["content"].endswith("The answer is 14.")
        words.append(len(msgs[2]["content"].split()))
    assert words == sorted(words) and len(set(words)) == 6  # the examples' lengths rise with the level
    assert [m["role"] for m in build_messages(q, 3, "symbolic")] == [
        "system",
        "user",
    ]  # no plain-steps example
    yes_no = Question(id="q2", text="Is the sky green?", gold="False", task=TaskType.YESNO)
    yn = [build_messages(yes_no, lv, "cot")[2]["content"] for lv in LEVELS]
    assert all(t.endswith("The answer is True.") for t in yn) and yn == sorted(
        yn, key=lambda t: len(t.split())
    )
    choice = Question(id="q3", text="Pick one. A) x B) y", gold="A", task=TaskType.CHOICE)
    assert len(build_messages(choice, 3, "cot")) == 2  # no example written for this task type yet
