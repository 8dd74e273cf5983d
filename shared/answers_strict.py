"""The paper's strict scoring, reimplemented from its description. Pure functions.

The paper scored commonsense answers with the regex ``[Tt]he answer is ([A-E]|True|False)`` and math
answers with MAmmoTH's ``answer_clean``; our own extraction (`shared.answers`) is more lenient (it
falls back to the last True/False, the last number or an option's text). Both are reported:
``accuracy`` is ours, ``accuracy_strict`` the paper's.

- `strict_extract(text, dataset)`: the answer the paper's evaluator reads, or None (unparsed).
- `strict_correct(pred, gold, dataset)`: the paper's comparison of that answer with a gold answer
  in our canonical form (numbers, letters A-E, True/False, MATH LaTeX).

MAmmoTH, as described in its evaluation code: cut the output at the last "The answer is[:]" trigger
(when a trigger occurs twice, the reply is first cut at its first blank line, as for in-context
examples); keep what follows the last ``=``; then take the first number (first letter A-E for AQuA)
after a trigger, or the last one when there is none; drop a trailing ``.`` or ``/``. A number is
right when it equals the gold answer after rounding (integer gold) or within 4 % (other gold).
MATH: the text after "The answer is", else the last ``\\boxed{}``, else the last number, normalised
the Hendrycks way; right when it equals the normalised gold text or the same number.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Literal

from shared.math_grading import _match_brace

StrictRule = Literal["regex", "mammoth"]

#: which of the paper's two evaluators scores each dataset
STRICT_RULES: dict[str, StrictRule] = {
    "csqa": "regex",
    "openbookqa": "regex",
    "strategyqa": "regex",
    "svamp": "mammoth",
    "gsm8k": "mammoth",
    "arith": "mammoth",
    "aqua": "mammoth",
    "math": "mammoth",
}

COMMONSENSE_PATTERN = re.compile(r"[Tt]he answer is ([A-E]|True|False)")
_TRIGGERS = ("The answer is:", "The answer is", "the answer is")
_TRIGGER_SPLIT = re.compile("|".join(re.escape(t) for t in _TRIGGERS))
_MAMMOTH_NUMBER = re.compile(r"-?\d+/?\.?\d*")
_LAST_NUMBER = re.compile(r"-?\d*\.?\d+")
_LETTER = re.compile(r"\b(A|B|C|D|E)\b")


def strict_rule(dataset: str) -> StrictRule:
    """The paper's evaluator for `dataset` (a canonical dataset name)."""
    if dataset not in STRICT_RULES:
        raise ValueError(f"no strict scoring for dataset {dataset!r}; known: {', '.join(STRICT_RULES)}")
    return STRICT_RULES[dataset]


# --- commonsense: the regex --------------------------------------------------------------------


def _extract_regex(text: str) -> str | None:
    found = COMMONSENSE_PATTERN.findall(text)
    return found[-1] if found else None


# --- MAmmoTH: numbers and letters ----------------------------------------------------------------


def _drop_extra_zeros(s: str) -> str:
    """``"145.0"`` -> ``"145"``, ``"0.50"`` -> ``"0.5"``; text that is not a float stays as it is."""
    try:
        v = float(s)
    except ValueError:
        return s
    if v.is_integer() and abs(v) < 1e16:
        return str(int(v))
    return repr(v)


def _after_trigger(text: str) -> tuple[str, bool]:
    """(the text after the last trigger, whether there was one), with MAmmoTH's in-context cut."""
    if any(text.count(t) > 1 for t in _TRIGGERS):
        text = text.split("\n\n")[0]
    parts = _TRIGGER_SPLIT.split(text)
    tail = parts[-1]
    if "=" in tail:
        tail = tail.split("=")[-1].strip()
    return tail, len(parts) > 1


def _extract_mammoth_choice_or_number(text: str, dataset: str) -> str | None:
    tail, triggered = _after_trigger(text.strip("\n"))
    if dataset == "aqua":
        cands = _LETTER.findall(tail.upper()) or [tail.strip().strip(".")]
    else:
        tail = tail.replace(",", "")
        cands = [_drop_extra_zeros(s) for s in _MAMMOTH_NUMBER.findall(tail)]
    if not cands:
        return None
    pred = cands[0] if triggered else cands[-1]
    pred = pred[:-1] if pred.endswith(".") else pred
    pred = pred[:-1] if pred.endswith("/") else pred
    return pred or None


# --- MAmmoTH: MATH -----------------------------------------------------------------------------


def _fix_fracs(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1b`` -> ``\\frac{1}{b}``, ``\\frac{1}2`` unchanged."""
    head, *rest = s.split("\\frac")
    out = head
    for sub in rest:
        out += "\\frac"
        if not sub or sub[0] == "{":
            out += sub
        elif len(sub) < 2:
            return s
        elif sub[1] != "{":
            out += "{" + sub[0] + "}{" + sub[1] + "}" + sub[2:]
        else:
            out += "{" + sub[0] + "}" + sub[1:]
    return out


def _fix_a_slash_b(s: str) -> str:
    m = re.fullmatch(r"(-?\d+)/(-?\d+)", s)
    return (
        f"\\frac{{{int(m.group(1))}}}{{{int(m.group(2))}}}"
        if m and s == f"{int(m.group(1))}/{int(m.group(2))}"
        else s
    )


def _fix_sqrt(s: str) -> str:
    head, *rest = s.split("\\sqrt")
    return head + "".join("\\sqrt" + (p if not p or p[0] == "{" else "{" + p[0] + "}" + p[1:]) for p in rest)


def strip_math(s: str) -> str:
    """The Hendrycks MATH normalisation MAmmoTH applies to an answer (spaces, fracs, units, ...)."""
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac").replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    s = s.split("\\text{ ")[0]
    s = s.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = _fix_sqrt(s).replace(" ", "")
    return _fix_a_slash_b(_fix_fracs(s))


def _boxed_after(s: str) -> str:
    """What follows the last ``boxed``: its braced group, else the text up to a ``$``."""
    after = s.split("boxed")[-1]
    if not after:
        return ""
    if after[0] == "{":
        end = _match_brace(after, 0)
        inner = after[1:end] if end >= 0 else after[1:]
    else:
        inner = after.split("$")[0].strip()
    return strip_math(inner)


def _extract_mammoth_math(text: str) -> str | None:
    if not text:
        return None
    if "The answer is " in text:
        pred = text.split("The answer is ")[-1].strip()
    elif "the answer is " in text:
        pred = text.split("the answer is ")[-1].strip()
    elif "boxed" in text:
        pred = _boxed_after(text)
    else:
        nums = _LAST_NUMBER.findall(text)
        pred = nums[-1] if nums else ""
    pred = pred[:-1] if pred.endswith(".") else pred
    pred = pred[:-1] if pred.endswith("/") else pred
    pred = strip_math(pred)
    if "boxed" in pred:
        pred = _boxed_after(pred)
    return pred or None


# --- public API ----------------------------------------------------------------------------------


def strict_extract(text: str | None, dataset: str) -> str | None:
    """The answer the paper's evaluator reads from `text`, or None when it reads none."""
    if text is None:
        return None
    if strict_rule(dataset) == "regex":
        return _extract_regex(text)
    if dataset == "math":
        return _extract_mammoth_math(text)
    return _extract_mammoth_choice_or_number(text, dataset)


def _number(s: str) -> float | None:
    """A number from plain text, ``a/b`` or ``\\frac{a}{b}`` (no evaluation of anything else)."""
    t = re.sub(r"\\frac\{([^{}]+)\}\{([^{}]+)\}", r"\1/\2", s).replace(",", "").strip()
    try:
        return float(Fraction(t)) if "/" in t else float(t)
    except (ValueError, ZeroDivisionError):
        return None


def _numbers_agree(pred: float, gold: float) -> bool:
    if pred != pred:
        return False
    if gold.is_integer():
        return round(pred) == gold
    return abs(pred - gold) <= abs(gold) * 0.04


def strict_correct(pred: str | None, gold: str, dataset: str) -> bool:
    """The paper's comparison: exact text (letters, True/False) or MAmmoTH's number/string match."""
    if pred is None:
        return False
    gold = str(gold).strip()
    if strict_rule(dataset) == "regex" or dataset == "aqua":
        return pred == gold
    if dataset == "math":
        gold = strip_math(gold)
    if pred == gold:
        return True
    p, g = _number(pred), _number(gold)
    return p is not None and g is not None and _numbers_agree(p, g)


def strict_fields(output: str | None, gold: str, dataset: str) -> dict:
    """The strict columns of a prediction row: ``extracted_strict`` and ``correct_strict``.

    Both are None for a dataset the paper did not score (no strict rule).
    """
    if dataset not in STRICT_RULES:
        return {"extracted_strict": None, "correct_strict": None}
    pred = strict_extract(output, dataset)
    return {"extracted_strict": pred, "correct_strict": strict_correct(pred, gold, dataset)}


def strict_summary(rows: list[dict]) -> dict:
    """``accuracy_strict`` (unparsed counts as wrong), its Wilson 95% interval, and the counts.

    All None when a row has no strict verdict (a dataset the paper did not score).
    """
    from shared.stats import wilson_interval

    keys = ("accuracy_strict", "ci_low_strict", "ci_high_strict", "correct_strict", "unparsed_strict")
    verdicts = [r.get("correct_strict") for r in rows]
    if not rows or any(v is None for v in verdicts):
        return dict.fromkeys(keys)
    k = sum(bool(v) for v in verdicts)
    lo, hi = wilson_interval(k, len(rows))
    unparsed = sum(r.get("extracted_strict") is None for r in rows)
    return dict(zip(keys, (k / len(rows), lo, hi, k, unparsed), strict=True))
