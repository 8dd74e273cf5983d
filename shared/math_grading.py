"""MATH answers: extraction (last ``\\boxed{}`` / "The answer is"), LaTeX normalisation, equivalence.

Equivalence (`math_equivalent`) tries, in order: string match after `normalize_math`; numbers;
structures (intervals, tuples, unions, unordered lists, sets, matrices) element by element; equations
side by side; and sympy, through a small LaTeX->sympy converter (`latex_to_sympy`, no antlr). Sympy
can hang, so `grade_math_many` runs undecided items in a process pool with a per-item timeout: an
item that times out is graded None.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import Any

START_METHOD_ENV = "COTD_GRADING_START_METHOD"
BACKSTOP_SLACK_S = 5.0  # extra seconds before stuck workers are terminated


class GradingTimeout(Exception):
    """Raised when one MATH equivalence check runs past its time limit."""


# --- extraction ---------------------------------------------------------------------------------


def _match_brace(s: str, open_pos: int) -> int:
    """Index of the `}` closing the `{` at `open_pos`, or -1 when it is never closed."""
    depth = 0
    i = open_pos
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def last_boxed(text: str) -> tuple[str, int] | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox``, ``\\boxed 5``) and its position."""
    starts = [m for m in re.finditer(r"\\(?:boxed|fbox)\b", text)]
    for m in reversed(starts):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            end = _match_brace(text, i)
            content = text[i + 1 : end] if end >= 0 else text[i + 1 :]
            if content.strip():
                return content.strip(), m.start()
        elif m.group(0) == "\\boxed" and i > m.end():
            token = re.match(r"[^\s$]+", text[i:])
            if token:
                return token.group(0), m.start()
    return None


_ANSWER_IS = re.compile(r"answer\s*is(?-i:(?![a-z]))\s*[:：]?", re.I)


def _answer_is_value(text: str) -> tuple[str, int] | None:
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    tail = text[m.end() :].lstrip()
    line = tail.split("\n", 1)[0].strip()
    line = re.sub(r"^(?:<answer>|\*+|:)\s*", "", line).strip("*").strip()
    for open_, close in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if line.startswith(open_):
            end = line.find(close, len(open_))
            line = line[len(open_) : end] if end >= 0 else line[len(open_) :]
            break
    line = line.strip().rstrip(".").strip()
    line = re.sub(r"\$+$", "", line).strip()
    if not line:
        return None
    return line, m.start()


_CONTROL = {"\x0c": "\\f", "\x08": "\\b", "\t": "\\t", "\r": "\\r", "\x07": "\\a", "\x0b": "\\v"}


def repair_escapes(text: str) -> str:
    r"""Undo JSON escapes that ate a LaTeX backslash: form feed + ``rac`` was ``\frac``, and so on."""
    for ch, rep in _CONTROL.items():
        if ch in text:
            text = re.sub(re.escape(ch) + r"(?=[a-zA-Z])", lambda _m, r=rep: r, text)
    return text


def extract_math_answer(text: str) -> tuple[str | None, str]:
    """(answer, rule): whichever of the last ``\\boxed{}`` and the last "The answer is" comes later."""
    text = repair_escapes(text)
    boxed = last_boxed(text)
    said = _answer_is_value(text)
    if boxed and (not said or boxed[1] > said[1]):
        return boxed[0], "boxed"
    if said:
        inner = last_boxed(said[0])
        return (inner[0] if inner else said[0]), "answer_is"
    nums = re.findall(r"-?\d+(?:\.\d+)?(?:/\d+)?", text)
    if nums:
        return nums[-1], "last_number"
    return None, "none"


# --- normalisation ------------------------------------------------------------------------------

_TEXT_CMDS = ("\\text", "\\textbf", "\\textit", "\\textnormal", "\\textrm", "\\mathrm", "\\mathbf", "\\mbox")
_UNIT_WORDS = (
    r"(?:units?|sq|square|cubic|cm|m|km|mm|in|inch(?:es)?|ft|feet|foot|yards?|yd|miles?|mi|meters?|"
    r"centimeters?|kilometers?|millimeters?|degrees?|radians?|rad|sec(?:onds?)?|s|min(?:utes?)?|"
    r"h|hr|hrs|hours?|days?|weeks?|months?|years?|dollars?|cents?|pounds?|lbs?|ounces?|oz|kg|g|grams?|"
    r"liters?|l|ml|gallons?|mph|people|students?|ways?|points?|coins?|marbles?|books?|pages?|"
    r"times|apples?|cookies?|tickets?|percent|per|and|of)"
)
_NUMBERISH = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?|[-+]?\\frac\{[^{}]*\}\{[^{}]*\}"


def _unwrap_commands(s: str, commands: tuple[str, ...]) -> str:
    """Replace ``\\cmd{X}`` by X (an unclosed brace takes the rest of the string)."""
    for cmd in sorted(commands, key=len, reverse=True):
        while True:
            m = re.search(re.escape(cmd) + r"\s*\{", s)
            if not m:
                break
            open_pos = m.end() - 1
            end = _match_brace(s, open_pos)
            inner = s[open_pos + 1 : end] if end >= 0 else s[open_pos + 1 :]
            s = s[: m.start()] + " " + inner + (s[end + 1 :] if end >= 0 else "")
    return s


def _fix_fracs(s: str) -> str:
    r"""``\frac12`` -> ``\frac{1}{2}``, ``\frac1{b}`` -> ``\frac{1}{b}``."""
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*(\w)", r"\\frac{\1}{\2}", s)
    return s


_UNICODE = {
    "π": "\\pi",
    "∞": "\\infty",
    "×": "\\times",
    "·": "\\cdot",
    "⋅": "\\cdot",
    "÷": "\\div",
    "−": "-",
    "–": "-",
    "≤": "\\le",
    "≥": "\\ge",
    "≠": "\\ne",
    "∪": "\\cup",
    "√": "\\sqrt",
}


def _unicode_to_latex(s: str) -> str:
    s = re.sub(r"√\s*\(([^()]*)\)", r"\\sqrt{\1}", s)
    s = re.sub(r"√\s*(\d+(?:\.\d+)?|[a-zA-Z])", r"\\sqrt{\1}", s)
    for ch, rep in _UNICODE.items():
        s = s.replace(ch, rep + (" " if rep[-1].isalpha() and ch != "√" else ""))
    return s


def normalize_math(answer: str) -> str:
    """Normalise a LaTeX answer for string comparison (the usual MATH `strip_string`, extended)."""
    s = repair_escapes(str(answer)).strip()
    if "\\begin" not in s:
        s = re.sub(r"\\\\(?=[a-zA-Z])", r"\\", s)  # "\\\\circ" -> "\\circ"
    s = _unicode_to_latex(s)
    s = s.replace("\n", " ").replace("\\!", "").replace("\\displaystyle", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)\s*(?=[()\[\]|.]|\\[{}|])", "", s)
    s = s.replace("\\left", "").replace("\\right", "")
    s = _unwrap_commands(s, _TEXT_CMDS)
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree", "", s)
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    s = s.replace("{,}", ",")
    s = re.sub(r"(?<!\\)\\[,;:> ]|~|\\quad|\\qquad", " ", s)
    s = s.replace("\\leq", "\\le").replace("\\geq", "\\ge").replace("\\neq", "\\ne")
    s = s.strip().rstrip(".").strip()
    # "x = 5" / "\theta = 30": drop a single short left-hand side
    m = re.fullmatch(r"\s*(?:[a-zA-Z](?:_\{?\w+\}?)?|\\[a-zA-Z]+)\s*=\s*(.+)", s)
    if m and "=" not in m.group(1):
        s = m.group(1)
    # trailing unit words after a number: "10 inches", "5 \text{ cm}^2"
    m = re.fullmatch(rf"({_NUMBERISH})\s*(?:{_UNIT_WORDS}(?:\^?\{{?[23]\}}?)?\s*)+", s, flags=re.I)
    m = m or re.fullmatch(rf"(.*?\S)\s+(?:{_UNIT_WORDS}(?:\^?\{{?[23]\}}?)?\s*)+", s, flags=re.I)
    if m:
        s = m.group(1)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    s = re.sub(r"\\sqrt\s*(\w)", r"\\sqrt{\1}", s)
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    s = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)
    m = re.fullmatch(r"(-?\d+)/(\d+)", s)
    if m:
        s = f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}"
    m = re.fullmatch(r"-?\d+\.\d*", s)
    if m:
        s = s.rstrip("0").rstrip(".") if "." in s else s
    m = re.fullmatch(r"\(?([A-E])\)?", s)
    if m:
        s = m.group(1)
    return s


# --- numbers and structures ---------------------------------------------------------------------


def _as_number(s: str) -> float | None:
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", s)
    try:
        if m:
            v = float(Fraction(int(m.group(2)), int(m.group(3))))
            return -v if m.group(1) else v
        if re.fullmatch(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?", s):
            return float(s)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


_OPENERS, _CLOSERS = "([{", ")]}"


def _split_top(s: str, sep: str) -> list[str]:
    """Split on `sep` outside any brackets."""
    parts, depth, cur, i = [], 0, [], 0
    while i < len(s):
        if s.startswith("\\{", i) or s.startswith("\\}", i):
            depth += 1 if s[i + 1] == "{" else -1
            cur.append(s[i : i + 2])
            i += 2
            continue
        c = s[i]
        if c in _OPENERS:
            depth += 1
        elif c in _CLOSERS:
            depth -= 1
        if depth == 0 and s.startswith(sep, i):
            parts.append("".join(cur))
            cur = []
            i += len(sep)
            continue
        cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _enclosed(s: str) -> bool:
    """Whether the bracket opening `s` closes at its very end."""
    depth = 0
    for i, c in enumerate(s):
        if c in _OPENERS:
            depth += 1
        elif c in _CLOSERS:
            depth -= 1
            if depth == 0 and i != len(s) - 1:
                return False
    return depth == 0


def _structure(s: str) -> tuple[str, list[Any]] | None:
    """(kind, elements) for a matrix, union, set, bracketed tuple/interval or bare list; else None."""
    m = re.fullmatch(r"\\begin\{[pbvB]?matrix\}(.*)\\end\{[pbvB]?matrix\}", s)
    if m:
        rows = [r for r in re.split(r"\\\\", m.group(1)) if r.strip()]
        return "matrix", [r.split("&") for r in rows]
    union = _split_top(s, "\\cup")
    if len(union) > 1:
        return "union", union
    if s.startswith("\\{") and s.endswith("\\}"):
        return "set", _split_top(s[2:-2], ",")
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _enclosed(s):
        inner = _split_top(s[1:-1], ",")
        if len(inner) > 1:
            return s[0] + s[-1], inner
        return None
    items = _split_top(s, ",")
    if len(items) > 1 and all(items):
        return "list", items
    return None


# --- sympy --------------------------------------------------------------------------------------

_FUNCS = {
    "\\sin": "sin",
    "\\cos": "cos",
    "\\tan": "tan",
    "\\cot": "cot",
    "\\sec": "sec",
    "\\csc": "csc",
    "\\arcsin": "asin",
    "\\arccos": "acos",
    "\\arctan": "atan",
    "\\ln": "log",
    "\\log": "log",
    "\\exp": "exp",
}
_GREEK = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa mu nu xi omicron rho sigma tau upsilon phi "
    "chi psi omega"
)
_KNOWN_NAMES = set(_FUNCS.values()) | {"sqrt", "pi"} | set(_GREEK.split())
_SAFE = re.compile(r"[0-9a-zA-Z_+\-*/^().,\s]*")


def _replace_frac_sqrt(s: str) -> str:
    out = s
    while True:
        m = re.search(r"\\frac\s*\{", out)
        if m:
            a_end = _match_brace(out, m.end() - 1)
            if a_end < 0 or a_end + 1 >= len(out) or out[a_end + 1] != "{":
                raise ValueError("malformed \\frac")
            b_end = _match_brace(out, a_end + 1)
            if b_end < 0:
                raise ValueError("malformed \\frac")
            a, b = out[m.end() : a_end], out[a_end + 2 : b_end]
            out = f"{out[: m.start()]}(({a})/({b})){out[b_end + 1 :]}"
            continue
        m = re.search(r"\\sqrt\s*(\[[^\]]*\])?\s*\{", out)
        if m:
            end = _match_brace(out, m.end() - 1)
            if end < 0:
                raise ValueError("malformed \\sqrt")
            body = out[m.end() : end]
            if m.group(1):
                rep = f"(({body})**(1/({m.group(1)[1:-1]})))"
            else:
                rep = f"sqrt({body})"
            out = f"{out[: m.start()]}{rep}{out[end + 1 :]}"
            continue
        return out


def latex_to_sympy(latex: str) -> Any:
    """Convert a normalised LaTeX expression to a sympy expression (raises ValueError if it can't)."""
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    s = latex.strip()
    if len(s) > 300 or "__" in s or re.search(r"\^\s*\{?\s*\d{4,}|\d{30,}", s):
        raise ValueError("expression too large to evaluate safely")
    s = re.sub(r"(?<![\d.}])(\d+)\\frac\{(\d+)\}\{(\d+)\}", r"(\1+\2/\3)", s)  # mixed numbers
    s = _replace_frac_sqrt(s)
    for cmd, name in sorted(_FUNCS.items(), key=lambda kv: -len(kv[0])):
        s = s.replace(cmd, f" {name} ")
    s = s.replace("\\cdot", "*").replace("\\times", "*").replace("\\div", "/")
    s = s.replace("\\pi", " pi ").replace("\\infty", " oo ").replace("{", "(").replace("}", ")")
    s = re.sub(r"\\([a-zA-Z]+)", r" \1 ", s)
    if not _SAFE.fullmatch(s):
        raise ValueError(f"unsupported characters in {latex!r}")
    words = {w for w in re.findall(r"[a-zA-Z]{3,}", s)} - _KNOWN_NAMES
    if words:  # words ("October", "lambda") are compared as strings, never evaluated
        raise ValueError(f"words in {latex!r}: {sorted(words)}")
    local = {c: sympy.Symbol(c) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"}
    local.update(oo=sympy.oo, pi=sympy.pi)
    transformations = standard_transformations + (implicit_multiplication_application, convert_xor)
    try:
        return parse_expr(s, transformations=transformations, evaluate=True, local_dict=local)
    except Exception as exc:  # sympy raises many kinds (SyntaxError, TypeError, TokenError)
        raise ValueError(f"cannot parse {latex!r}: {exc}") from None


def _sympy_equal(a: str, b: str) -> bool:
    import sympy

    try:
        ea, eb = latex_to_sympy(a), latex_to_sympy(b)
    except ValueError:
        return False
    try:
        if ea == eb:
            return True
        diff = sympy.simplify(ea - eb)
        if diff == 0:
            return True
        if diff.is_number:
            val = complex(sympy.N(diff))
            return abs(val) <= 1e-6 * max(1.0, abs(complex(sympy.N(eb))))
    except (TypeError, ValueError, AttributeError, ZeroDivisionError, RecursionError, OverflowError):
        return False
    return False


# --- equivalence --------------------------------------------------------------------------------


def _quick(a: str, b: str) -> bool | None:
    """Decide cheaply on normalised strings (equal, or both plain numbers); None if undecided."""
    if a == b:
        return True
    if not a or not b:
        return False
    na, nb = _as_number(a), _as_number(b)
    if na is not None and nb is not None:
        return _close(na, nb)
    return None


def _equiv_norm(a: str, b: str) -> bool:
    quick = _quick(a, b)
    if quick is not None:
        return quick
    sa, sb = _structure(a), _structure(b)
    if sa or sb:
        if not (sa and sb) or sa[0] != sb[0] or len(sa[1]) != len(sb[1]):
            return False
        kind, xs, ys = sa[0], sa[1], sb[1]
        if kind == "matrix":
            return all(
                len(r1) == len(r2) and all(_equiv_norm(c1, c2) for c1, c2 in zip(r1, r2, strict=True))
                for r1, r2 in zip(xs, ys, strict=True)
            )
        if kind in ("list", "set"):
            return _unordered_equal(xs, ys)
        return all(_equiv_norm(x, y) for x, y in zip(xs, ys, strict=True))
    if a.count("=") == 1 and b.count("=") == 1:
        la, ra = a.split("=")
        lb, rb = b.split("=")
        return _equiv_norm(la, lb) and _equiv_norm(ra, rb)
    if "=" in a or "=" in b or "\\le" in a + b or "\\ge" in a + b or "<" in a + b or ">" in a + b:
        return False
    return _sympy_equal(a, b)


def _unordered_equal(xs: list[str], ys: list[str]) -> bool:
    left = list(ys)
    for x in xs:
        for j, y in enumerate(left):
            if _equiv_norm(x, y):
                del left[j]
                break
        else:
            return False
    return True


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise `GradingTimeout` after `seconds` (SIGALRM; a no-op off the main thread or on Windows)."""
    usable = (
        seconds is not None
        and seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise GradingTimeout(f"MATH grading exceeded {seconds}s")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def math_equivalent(pred: str | None, gold: str | None, timeout: float | None = None) -> bool:
    """Whether two MATH answers are equivalent. Raises `GradingTimeout` past `timeout` seconds."""
    if pred is None or gold is None:
        return False
    a, b = normalize_math(pred), normalize_math(gold)
    quick = _quick(a, b)
    if quick is not None:
        return quick
    with _time_limit(timeout):
        return _equiv_norm(a, b)


def _grade_worker(pred: str, gold: str, timeout: float) -> bool | None:
    try:
        return math_equivalent(pred, gold, timeout=timeout)
    except GradingTimeout:
        return None
    except Exception:  # any sympy failure means "not shown equal"
        return False


def grade_math_many(
    preds: list[str | None], golds: list[str], timeout: float = 5.0, max_workers: int | None = None
) -> list[bool | None]:
    """Grade MATH answers: cheap checks in-process, the rest in a process pool, None on timeout.

    The pool's start method is ``fork`` where available (``COTD_GRADING_START_METHOD`` overrides).
    Each item is limited to `timeout` seconds inside its worker; a worker stuck past that (e.g. in C
    code) is terminated when the batch's overall deadline passes.
    """
    results: list[bool | None] = [None] * len(preds)
    todo: list[int] = []
    normed: dict[int, tuple[str, str]] = {}
    for i, (p, g) in enumerate(zip(preds, golds, strict=True)):
        if p is None:
            results[i] = False
            continue
        a, b = normalize_math(p), normalize_math(g)
        quick = _quick(a, b)
        if quick is None:
            todo.append(i)
            normed[i] = (p, g)
        else:
            results[i] = quick
    if not todo:
        return results
    import sympy  # noqa: F401 - imported once here so forked workers inherit it

    method = os.environ.get(START_METHOD_ENV) or (
        "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    )
    slack = BACKSTOP_SLACK_S
    workers = max(1, min(len(todo), max_workers or (os.cpu_count() or 1)))
    ex = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))
    futures: dict[cf.Future, int] = {}
    try:
        for i in todo:
            futures[ex.submit(_grade_worker, normed[i][0], normed[i][1], timeout)] = i
        deadline = time.monotonic() + timeout * math.ceil(len(todo) / workers) + timeout + slack
        done, not_done = cf.wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        for fut in done:
            try:
                results[futures[fut]] = fut.result()
            except Exception:  # a worker died (BrokenProcessPool): count as a timeout
                results[futures[fut]] = None
        for fut in not_done:
            results[futures[fut]] = None
    finally:
        stuck = [f for f in futures if not f.done()]
        if stuck:
            for proc in list(getattr(ex, "_processes", {}).values()):
                proc.terminate()
        ex.shutdown(wait=not stuck, cancel_futures=True)
    return results
