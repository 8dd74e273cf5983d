"""`cotd data stats`, `cotd data export-llamafactory`, `cotd generate` and bad input, through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.generator.paper import classify
from shared.cli import cli


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.output


def _independent(shared_data: Path, cot: str, gold: str, kind: str) -> tuple[float, float]:
    """Teacher accuracy and mean words computed with plain json + regex."""
    norm = lambda s: re.sub(r"\s+", " ", s).strip()  # noqa: E731
    gold_by_q = {norm(x["instruction"]): str(x["output"]).strip() for x in json.loads((shared_data / "paper-cot" / gold).read_text())}
    items = json.loads((shared_data / "paper-cot" / cot).read_text())
    words = [len(x["output"].split()) for x in items]
    right = total = 0
    for x in items:
        g = gold_by_q.get(norm(x["instruction"]))
        if g is None:
            continue
        total += 1
        m = re.findall(r"answer is\s*:?\s*\(?([^\s.,)]+)", x["output"], flags=re.I)
        pred = m[-1] if m else None
        if pred is None:
            continue
        if kind == "number":
            try:
                right += abs(float(pred.replace(",", "").replace("$", "")) - float(g)) < 1e-6
            except ValueError:
                pass
        elif kind == "yesno":
            right += {"true": "True", "yes": "True", "false": "False", "no": "False"}.get(pred.lower()) == g
        else:
            right += pred.upper().startswith(g.upper())
    return right / total, sum(words) / len(words)


@pytest.mark.parametrize(
    ("cot", "gold", "dataset", "kind"),
    [
        ("SVAMP_ChatGPT_level1_ranked.json", "SVAMP_only_ans.json", "svamp", "number"),
        ("SVAMP_gemini_level6_ranked.json", "SVAMP_only_ans.json", "svamp", "number"),
        ("strategyQA_chatgpt_level_3_ranked.json", "strategyQA_onlyans.json", "strategyqa", "yesno"),
        ("openbookQA_chatgpt_level_2_ranked.json", "openbookQA_onlyans.json", "openbookqa", "choice"),
    ],
)
def test_data_stats_matches_independent_count(shared_data: Path, cot: str, gold: str, dataset: str, kind: str) -> None:
    pc = shared_data / "paper-cot"
    code, out = _run("data", "stats", str(pc / cot), "--dataset", dataset, "--gold", str(pc / gold), "--json")
    assert code == 0, out
    s = json.loads(out.strip().splitlines()[-1])
    acc, words = _independent(shared_data, cot, gold, kind)
    assert s["mean_words"] == pytest.approx(words, abs=1e-9)
    assert s["teacher_accuracy"] == pytest.approx(acc, abs=0.01)
    assert s["items"] == len(json.loads((pc / cot).read_text())) and s["graded"] >= 0.98 * s["items"]
    assert 0.95 <= s["answer_parsed_rate"] <= 1.0


def test_data_stats_without_gold_and_with_tokenizer(tmp_path: Path) -> None:
    from services.trainer.tiny import train_tokenizer

    f = tmp_path / "set.json"
    f.write_text(json.dumps([{"instruction": "2+2?", "output": "Two and two. The answer is 4"},
                             {"instruction": "3+3?", "output": "I do not know"}]))
    tok = train_tokenizer(["Two and two. The answer is 4", "I do not know"], vocab_size=280)
    tok.save_pretrained(tmp_path / "tok")
    code, out = _run("data", "stats", str(f), "--dataset", "svamp", "--tokenizer", str(tmp_path / "tok"), "--json")
    assert code == 0, out
    s = json.loads(out)
    assert s["teacher_accuracy"] is None and s["answer_parsed_rate"] == 0.5 and s["mean_words"] == 5.5
    assert s["mean_words_parsed"] == 7.0  # the unparsed "I do not know" is left out
    assert s["mean_tokens"] > 0 and s["tokenizer"] == str(tmp_path / "tok")


def test_malformed_paper_file_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "SVAMP_ChatGPT_level2_ranked.json"
    bad.write_text(json.dumps([{"instruction": "a?", "output": "The answer is 1"}, {"instruction": "b?"}]))
    code, out = _run("data", "stats", str(bad), "--dataset", "svamp")
    assert code != 0 and len(out.strip().splitlines()) == 1
    assert "SVAMP_ChatGPT_level2_ranked.json" in out and "index 1" in out
    code, out = _run("data", "import-paper", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code != 0 and "SVAMP_ChatGPT_level2_ranked.json: index 1" in out


def test_generate_recorded_then_export(tmp_path: Path) -> None:
    f = tmp_path / "lv{level}.json"
    for lv in (1, 2):
        Path(str(f).format(level=lv)).write_text(json.dumps(
            [{"instruction": f"Q{i}: 1+{i}?", "output": ("x " * lv) + f"The answer is {1 + i}"} for i in range(3)]))
    dirs = []
    for lv in (1, 2):
        out = tmp_path / f"set{lv}"
        code, text = _run("generate", "--teacher", "recorded", "--files", str(f), "--dataset", "svamp",
                          "--level", str(lv), "--out", str(out))
        assert code == 0, text
        m = json.loads((out / "manifest.json").read_text())
        assert m["level"] == lv and m["stats"]["items"] == 3 and m["stats"]["answer_parsed_rate"] == 1.0
        assert m["stats"]["mean_tokens"] and m["tokenizer"] == "regex-fallback" and m["key"]
        dirs.append(str(out))
    code, text = _run("data", "export-llamafactory", *dirs, "--out", str(tmp_path / "lf"))
    assert code == 0, text
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())
    assert len(info) == 2
    for entry in info.values():
        rows = json.loads((tmp_path / "lf" / entry["file_name"]).read_text())
        assert len(rows) == 3 and set(rows[0]) == {"instruction", "input", "output"}
        assert entry["columns"]["response"] == "output"


def test_generate_server_teacher_needs_level(tmp_path: Path) -> None:
    code, out = _run("generate", "--teacher", "openai", "--dataset", "svamp", "--out", str(tmp_path))
    assert code != 0 and "--level" in out


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        ("SVAMP_ChatGPT_level3_ranked.json", ("svamp", "gpt-4o", 3, "cot")),
        ("openbookQA_chatgpt_level_2_ranked.json", ("openbookqa", "gpt-4o", 2, "cot")),
        ("0_SVAMP_chatgpt_level5BSM.json", ("svamp", "gpt-4o", 5, "subquestion")),
        ("0_aqua_chatgpt_level5Sym.json", ("aqua", "gpt-4o", 5, "symbolic")),
        ("openbookqa_chatgpt_rar_level3_ranked.json", ("openbookqa", "gpt-4o", 3, "rar")),
        ("stqa_llama_level6_ranked.json", ("strategyqa", "llama-3-70b", 6, "cot")),
        ("math_gemini_level1_ranked.json", ("math", "gemini-1.5-flash", 1, "cot")),
        ("stqa_human_annotation.json", ("strategyqa", "human", None, None)),
        ("gsm_train_onlyans.json", ("gsm8k", "answer-only", None, None)),
        ("commonsenseQA_onlyans.json", ("csqa", "answer-only", None, None)),
        ("SVAMP_only_ans.json", ("svamp", "answer-only", None, None)),
    ],
)
def test_classify_paper_names(name: str, expect: tuple) -> None:
    pf = classify(name)
    assert pf is not None and (pf.dataset, pf.teacher, pf.level, pf.format) == expect


@pytest.mark.parametrize("name", ["dataset_info.json", "ecqa_train.json", "README.md", "SVAMP_ChatGPT_ranked.json", "svamp_gpt5_level1.json"])
def test_classify_rejects(name: str) -> None:
    assert classify(name) is None
