"""Splitting OpenRLHF queries (prompt cut from the left, special tokens left in): tables and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.core.rollouts import longest_overlap, split_query, strip_special_tokens

CHATML = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"


def brute_overlap(prompt: str, query: str) -> int:
    return max((n for n in range(min(len(prompt), len(query)) + 1) if prompt.endswith(query[:n]) and n), default=0)


@pytest.mark.parametrize(
    ("query", "prompt", "response"),
    [
        (CHATML + "Red.<|im_end|>", CHATML, "Red."),  # the whole prompt, EOS left in by decode
        (CHATML[30:] + "Red.<|im_end|>\n<|endoftext|>", CHATML, "Red."),  # cut from the left
        (CHATML[-12:] + "Blue<|im_end|>", CHATML, "Blue"),  # only the assistant header survived the cut
        ("\ufffd" + CHATML[31:] + "Green", CHATML, "Green"),  # cut inside a character
        ("Q: 2+2?\nA: 4</s>", "Q: 2+2?\nA:", " 4"),  # SentencePiece EOS; the response's own blank stays
        ("<|start_header_id|>assistant<|end_header_id|>\n\nHi<|eot_id|>", "x<|start_header_id|>assistant", "Hi"),
        ("P:<｜Assistant｜>4<｜end▁of▁sentence｜>", "P:", "4"),  # DeepSeek's fullwidth markers
        ("P:<end_of_turn>", "P:", ""),
        ("P:a <|im_end|> b", "P:", "a <|im_end|> b"),  # inside the response: the neutralizer's job
        ("P:a<b>", "P:", "a<b>"),  # not a special token
        ("zzz", "P:", None),  # shares nothing
    ],
)
def test_split_query_table(query: str, prompt: str, response: str | None) -> None:
    assert split_query(query, prompt) == response


@given(st.text(alphabet="ab<|>x", max_size=40), st.text(alphabet="ab<|>x", max_size=40), st.integers(1, 4))
def test_longest_overlap_is_the_brute_force_one(prompt: str, query: str, candidates: int) -> None:
    # a two-letter alphabet makes many candidates, so the prefix-function path runs too
    assert longest_overlap(prompt, query, max_candidates=candidates) == brute_overlap(prompt, query)


@given(
    st.text(min_size=1, max_size=60),
    st.text(max_size=30).filter(lambda s: "<" not in s and ">" not in s),
    st.integers(0, 60),
)
def test_a_left_cut_prompt_gives_back_the_response(prompt: str, response: str, cut: int) -> None:
    cut = min(cut, len(prompt) - 1)
    got = split_query(prompt[cut:] + response + "<|im_end|>", prompt)
    assert got is not None
    # the overlap is the longest one, so it may eat the start of the response only where that repeats the prompt
    assert got == got.rstrip() and response.rstrip().endswith(got)


@given(st.text(max_size=40))
def test_stripping_is_idempotent_and_only_trims(text: str) -> None:
    once = strip_special_tokens(text)
    assert strip_special_tokens(once) == once and once in text


def test_repetitive_text_takes_the_linear_path() -> None:
    prompt = "a" * 59_999 + "b"  # every probe position is a candidate, and none is an overlap
    assert longest_overlap(prompt, "a" * 30_000 + "c") == 0
    assert longest_overlap(prompt, "a" * 29_999 + "b" + "a" * 10) == 30_000
