"""Templates (Appendix G verbatim, generic), conversation rendering, the score regex, and settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from server.core.prompts import (
    Message,
    PromptBuilder,
    TemplateName,
    load_template,
    render_conversation,
    resolve_template,
)
from server.core.settings import Backend, Settings

SHARED_TEMPLATE = Path(__file__).resolve().parents[1].parent / "shared" / "design" / "grm_prompt_appendix_g.txt"


def test_deepseek_template_is_appendix_g_verbatim() -> None:
    text = load_template(TemplateName.DEEPSEEK_GRM)
    assert text.startswith("You are a skilled little expert at scoring responses.")
    assert "#### Conversation Context ####\n{conversation}\n\n#### Responses to be Scored ####\n{responses}\n" in text
    assert text.rstrip().endswith("e.g., \\boxed{x, x} if there exists 2 responses>.")
    if SHARED_TEMPLATE.is_file():
        published = SHARED_TEMPLATE.read_text(encoding="utf-8").split("\n\n", 1)[1]
        assert text == published


def test_deepseek_prompt_wraps_responses_as_published() -> None:
    builder = PromptBuilder(TemplateName.DEEPSEEK_GRM)
    prompt = builder.build([Message("user", "Hi?")], ["Hello!", "Go away."])
    assert "User: Hi?\n\n#### Responses to be Scored ####\n" in prompt
    assert (
        "[The Begin of Response 1]\nHello!\n[The End of Response 1]\n[The Begin of Response 2]\nGo away.\n[The End of Response 2]\n"
        in prompt
    )
    assert "{conversation}" not in prompt and "{responses}" not in prompt


def test_multi_turn_rendering_labels_roles() -> None:
    messages = [
        Message("system", "Be brief."),
        Message("user", "2+2?"),
        Message("assistant", "4"),
        Message("user", "and 3+3?"),
    ]
    assert render_conversation(messages) == "System: Be brief.\n\nUser: 2+2?\n\nAssistant: 4\n\nUser: and 3+3?"


def test_placeholders_inside_user_text_are_not_substituted() -> None:
    builder = PromptBuilder(TemplateName.GENERIC)
    prompt = builder.build([Message("user", "explain {responses} and {n}")], ["{conversation}"])
    assert "User: explain {responses} and {n}" in prompt
    assert "[The Begin of Response 1]\n{conversation}\n" in prompt
    assert "Give exactly 1 scores" in prompt


def test_generic_template_has_a_worked_example_and_ends_with_judgment() -> None:
    text = load_template(TemplateName.GENERIC)
    assert "Scores: \\boxed{9, 2}" in text
    assert text.rstrip().endswith("#### Judgment ####")


@pytest.mark.parametrize(
    ("name", "model", "expected"),
    [
        (TemplateName.AUTO, "BBQGOD/DeepSeek-GRM-27B", TemplateName.DEEPSEEK_GRM),
        (TemplateName.AUTO, "smollm2-135m-instruct", TemplateName.GENERIC),
        (TemplateName.GENERIC, "BBQGOD/DeepSeek-GRM-27B", TemplateName.GENERIC),
    ],
)
def test_resolve_template(name: TemplateName, model: str, expected: TemplateName) -> None:
    assert resolve_template(name, model) is expected


@pytest.mark.parametrize(
    ("recorded", "setting", "expected"),
    [
        ('{"kind": "sft", "template": "generic"}', "auto", TemplateName.GENERIC),  # the record beats "grm" in the path
        ('{"kind": "grpo", "template": "deepseek-grm"}', "auto", TemplateName.DEEPSEEK_GRM),
        ('{"kind": "sft", "template": null}', "auto", TemplateName.DEEPSEEK_GRM),  # nothing recorded: the name rule
        ('{"kind": "sft", "template": "mystery"}', "auto", TemplateName.DEEPSEEK_GRM),  # unreadable: the name rule
        ("not json", "auto", TemplateName.DEEPSEEK_GRM),
        (None, "auto", TemplateName.DEEPSEEK_GRM),  # no training.json
        ('{"kind": "sft", "template": "generic"}', "deepseek-grm", TemplateName.DEEPSEEK_GRM),  # a set template wins
    ],
)
def test_a_checkpoint_trained_here_is_served_with_the_template_it_was_trained_on(
    tmp_path: Path, recorded: str | None, setting: str, expected: TemplateName
) -> None:
    """`train sft|grpo` write the template into training.json; a folder under e.g. /data/grm-server/runs (the
    image's cache) would otherwise get deepseek-grm from the `grm` in its path."""
    from server.core.engines import TRAINED_INFO, judging_template

    folder = tmp_path / "grm-server" / "runs" / "ckpt"
    folder.mkdir(parents=True)
    if recorded is not None:
        (folder / TRAINED_INFO).write_text(recorded, encoding="utf-8")
    settings = Settings().with_overrides({"generator.model": str(folder), "judging.template": setting})
    assert judging_template(settings) is expected


@pytest.mark.parametrize("template", [TemplateName.GENERIC, TemplateName.DEEPSEEK_GRM])
@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("max_tokens", [PromptBuilder.min_max_tokens(5), 256, 2048])
def test_score_regex_accepts_the_format_and_fits_the_budget(template: TemplateName, n: int, max_tokens: int) -> None:
    regex = re.compile(PromptBuilder(template).score_regex(n, max_tokens))
    box = "Scores: \\boxed{" + ", ".join(["10"] * n) + "}"
    assert regex.fullmatch(f"Specific Criteria: accuracy.\nAnalysis: fine.\n{box}")
    assert not regex.fullmatch(f"Specific Criteria: a.\nAnalysis: b.\nScores: \\boxed{{{', '.join(['10'] * (n + 1))}}}")
    assert not regex.fullmatch("Specific Criteria: a.\nAnalysis: b.\nScores: \\boxed{" + ", ".join(["0"] * n) + "}")
    # the longest string the regex allows still fits in max_tokens (a character is >= 1 token)
    limits = [int(x) for x in re.findall(r"\{1,(\d+)\}", regex.pattern)]
    longest = len("Specific Criteria: \nAnalysis: \n") + sum(limits) + len(box)
    assert longest <= max_tokens


def test_settings_from_env_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRM_JUDGING__K", "16")
    monkeypatch.setenv("GRM_GENERATOR__BACKEND", "openai")
    monkeypatch.setenv("GRM_GENERATOR__BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("GRM_SERVER__API_KEYS", '["a", "b"]')
    s = Settings()
    assert s.judging.k == 16
    assert s.generator.backend is Backend.OPENAI
    assert [k.get_secret_value() for k in s.server.api_keys] == ["a", "b"]


def test_settings_overrides_and_validation() -> None:
    s = Settings().with_overrides({"judging.k": 4, "generator.model": None, "server.port": 9001})
    assert (s.judging.k, s.server.port, s.generator.model) == (4, 9001, None)
    with pytest.raises(ValueError, match="max_k"):
        Settings().with_overrides({"judging.k": 100, "judging.max_k": 10})
    with pytest.raises(ValueError, match="base_url"):
        Settings().with_overrides({"generator.backend": "openai"})
    with pytest.raises(ValueError):
        Settings().with_overrides({"generator.backend": "tgi"})


@pytest.mark.parametrize(
    ("command", "env", "fails"),
    [
        (["serve", "--model", "BBQGOD/DeepSeek-GRM-27B"], {"GRM_JUDGING__MAX_MAX_TOKENS": "1024"}, True),
        (
            ["score", "--query", "q", "-r", "a", "--model", "org/my-grm-7b"],
            {"GRM_JUDGING__MAX_MAX_TOKENS": "1024"},
            True,
        ),
        (
            ["serve", "--model", "BBQGOD/DeepSeek-GRM-27B"],
            {"GRM_JUDGING__MAX_MAX_TOKENS": "1024", "GRM_JUDGING__TEMPLATE": "generic", "GRM_SERVER__PORT": "-1"},
            False,  # the generic template's 512 fits: the tree gets past the budget (and fails on the port)
        ),
    ],
)
def test_a_budget_over_max_max_tokens_for_the_resolved_template_exits_2(
    command: list[str], env: dict[str, str], fails: bool
) -> None:
    """`auto` means deepseek-grm (budget 2048) for a GRM model name: settings that would refuse every request
    leaving max_tokens unset fail at start, naming the setting, before any engine loads."""
    proc = subprocess.run(
        [sys.executable, "-m", "server.cli", *command],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert ("judging.max_max_tokens" in proc.stderr) is fails, proc.stderr
    if fails:
        assert "deepseek-grm" in proc.stderr and "2048" in proc.stderr
