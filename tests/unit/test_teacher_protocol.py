"""Pure validation of `cotd teacher serve` requests (TGI's rules and messages; OpenAI's ranges)."""

from __future__ import annotations

import pytest

from services.generator import server_openai as oa
from services.generator.server_engine import model_limits
from services.generator.server_protocol import (
    GenParams,
    Limits,
    RequestError,
    fit_prompt,
    new_tokens,
    parse_generate,
    sampling_of,
)

LIMITS = Limits(max_input_tokens=1023, max_total_tokens=1024)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": "\ud800"}, "`inputs` is not valid UTF-8"),
        ({"inputs": ""}, "`inputs` cannot be empty"),
        ({"inputs": 3}, "`inputs`"),
        (
            {"inputs": "x", "parameters": {"stop": ["a"] * 5}},
            "`stop` supports up to 4 stop sequences. Given: 5",
        ),
        ({"inputs": "x", "parameters": {"best_of": 2}}, "`best_of` must be > 0 and <= 1. Given: 2"),
        (
            {"inputs": "x", "parameters": {"top_n_tokens": 6}},
            "`top_n_tokens` must be >= 0 and <= 5. Given: 6",
        ),
        ({"inputs": "x", "parameters": {"unknown": 1}}, "`parameters.unknown`"),
    ],
)
def test_generate_bodies_are_refused_naming_the_field(body: dict, message: str) -> None:
    with pytest.raises(RequestError, match=message) as e:
        parse_generate(body, LIMITS)
    assert e.value.status == 422 and e.value.error_type == "validation"
    assert str(e.value).startswith("Input validation error: ")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"temperature": 0.0}, "`temperature` must be strictly positive"),
        ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
        ({"top_k": -1, "do_sample": True}, "`top_k` must be strictly positive"),
        ({"typical_p": 0.5}, "`typical_p`"),
        ({"watermark": True}, "`watermark`"),
        ({"grammar": {"type": "json", "value": {}}}, "`grammar`"),
        ({"repetition_penalty": 0}, "`repetition_penalty`"),
    ],
)
def test_sampling_parameters_follow_tgi(params: dict, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        sampling_of(GenParams(**params))


def test_warpers_imply_sampling_and_greedy_is_the_default() -> None:
    assert not sampling_of(GenParams()).do_sample
    assert sampling_of(GenParams(top_k=5)).do_sample and sampling_of(GenParams(temperature=0.7)).do_sample
    assert not sampling_of(GenParams(temperature=1.0)).do_sample


def test_new_tokens_are_bounded_by_the_total() -> None:
    assert new_tokens(1024 - 10, 10, LIMITS) == 1014
    with pytest.raises(
        RequestError, match=r"must be <= 1024. Given: 10 `inputs` tokens and 1015 `max_new_tokens`"
    ):
        new_tokens(1015, 10, LIMITS)
    with pytest.raises(RequestError, match="strictly positive"):
        new_tokens(0, 10, LIMITS)
    assert new_tokens(None, 1000, LIMITS) == 24  # TGI's default 100, capped by the room left


def test_long_prompts_are_refused_or_truncated_from_the_left() -> None:
    ids = list(range(2000))
    with pytest.raises(RequestError, match="`inputs` tokens must be <= 1023. Given: 2000"):
        fit_prompt(ids, None, LIMITS)
    assert fit_prompt(ids, 100, LIMITS) == ids[-100:]  # the question at the end survives
    with pytest.raises(RequestError, match="`truncate`"):
        fit_prompt(ids, 5000, LIMITS)


def test_limits_come_from_the_model() -> None:
    class Config:
        max_position_embeddings = 1024

    assert model_limits(Config(), None, None) == LIMITS
    assert model_limits(Config(), 500, 800).max_input_tokens == 500
    with pytest.raises(ValueError, match="exceeds the model's max_position_embeddings"):
        model_limits(Config(), None, 4096)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": []}, "`messages` must contain at least one message"),
        ({"messages": [{"role": "robot", "content": "x"}]}, r"`messages\[0\].role`: unknown role 'robot'"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "only text parts",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, "`tools`"),
        ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, "`top_logprobs`"),
    ],
)
def test_chat_requests_are_checked(body: dict, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        oa.chat_messages(oa.parse(oa.ChatRequest, body))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"temperature": -1}, "`temperature`"),
        ({"temperature": 2.5}, "`temperature`"),
        ({"n": 0}, "`n`"),
        ({"presence_penalty": 1.0}, "`presence_penalty`"),
        ({"top_p": 0}, "`top_p`"),
    ],
)
def test_openai_sampling_ranges(fields: dict, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        oa.sampling(oa.parse(oa.CompletionRequest, {"prompt": "x", **fields}))


def test_content_parts_are_joined_and_developer_is_system() -> None:
    req = oa.parse(
        oa.ChatRequest,
        {
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            ]
        },
    )
    assert oa.chat_messages(req) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "ab"},
    ]
    assert oa.sampling(oa.parse(oa.CompletionRequest, {"prompt": "x", "temperature": 0})).do_sample is False


def test_serve_refuses_bad_options_in_one_line() -> None:
    from click.testing import CliRunner

    from shared.cli import cli

    result = CliRunner().invoke(cli, ["teacher", "serve", "--model", "unused", "--max-batch", "0"])
    assert (
        result.exit_code != 0 and "--max-batch: Input should be greater than or equal to 1" in result.output
    )


def test_openai_limits_name_the_prompts_source() -> None:
    with pytest.raises(RequestError, match="`messages` tokens must be <= 1023"):
        oa.fit(list(range(2000)), 5, None, LIMITS, "max_tokens", "messages")
    with pytest.raises(RequestError, match="`prompt` tokens"):
        oa.fit(list(range(2000)), 5, None, LIMITS, "max_tokens", "prompt")
    assert oa.fit(list(range(10)), None, None, LIMITS, "max_tokens", "prompt") == (list(range(10)), 1014)


def test_penalties_frequency_counts_generated_tokens_only() -> None:
    """OpenAI's frequency penalty counts the reply's tokens; the CTRL penalty every token seen."""
    import torch

    from services.generator.server_engine import _penalize
    from services.generator.server_protocol import Sampling

    row = torch.tensor([2.0, 2.0, 2.0, -2.0])
    seen = [0, 0, 0, 1, 3]  # prompt 0, 0, 0; generated 1, 3
    freq = _penalize(row, seen, 2, Sampling(frequency_penalty=0.5), torch)
    assert freq.tolist() == [2.0, 1.5, 2.0, -2.5]  # token 0 (prompt only) untouched
    rep = _penalize(row, seen, 2, Sampling(repetition_penalty=2.0), torch)
    assert rep.tolist() == [1.0, 1.0, 2.0, -4.0]
    assert _penalize(row, seen, 2, Sampling(), torch) is row
