"""The served score regex for GRPO generation, so a policy that cannot yet write the judgment format unaided
still produces judgments the rule reward can tell apart (the reward itself is unchanged).

On the CPU TRL generates with plain `transformers.generate`, which takes no regex; `StructuredGRPO` hands it one
xgrammar logits processor per batch row (the row's own response count gives its regex, the one the server
serves with: `PromptBuilder.score_regex`). On a GPU TRL's vLLM colocate mode takes the regex itself
(`vllm_structured_outputs_regex`), one for the whole run."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

from server.core.prompts import PromptBuilder, StructuredOutput, TemplateName, resolve_structured_output


def served_structured(mode: StructuredOutput, template: TemplateName) -> bool:
    """Whether the server decodes this template's judgments under the whole-judgment regex (the default of
    `train grpo --structured/--no-structured`)."""
    return resolve_structured_output(mode, template) is StructuredOutput.REGEX


class RegexFor:
    """The served regex per response count, sized to `max_tokens` at the tokenizer's measured chars per token."""

    def __init__(self, template: TemplateName, max_tokens: int, chars_per_token: float) -> None:
        self._builder = PromptBuilder(template)
        self._max_tokens = max_tokens
        self._chars_per_token = chars_per_token

    def __call__(self, n_responses: int) -> str:
        return self._builder.score_regex(n_responses, self._max_tokens, self._chars_per_token)

    def union(self, counts: Iterable[int]) -> str:
        """One regex for several response counts (vLLM takes one per run; the rule still checks the count)."""
        parts = [self(n) for n in sorted(set(counts))]
        return parts[0] if len(parts) == 1 else "|".join(f"(?:{p})" for p in parts)


class GrammarCache:
    """xgrammar grammars compiled once per response count for one tokenizer."""

    def __init__(self, tokenizer: Any, vocab_size: int, regex_for: Callable[[int], str]) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self._compiler = xgr.GrammarCompiler(info)
        self._regex_for = regex_for
        self._compiled: dict[int, Any] = {}

    def processor(self, counts: Sequence[int]) -> Any:
        """A fresh logits processor for one `generate` call whose batch rows rate `counts[i]` responses."""
        from xgrammar.contrib.hf import LogitsProcessor

        for n in set(counts) - set(self._compiled):
            self._compiled[n] = self._compiler.compile_regex(self._regex_for(n))
        return LogitsProcessor([self._compiled[n] for n in counts])


def structured_trainer_class() -> type:
    """GRPOTrainer whose plain-`generate` path decodes every row under its served regex."""
    from transformers import LogitsProcessorList
    from trl.trainer.grpo_trainer import GRPOTrainer

    class StructuredGRPO(GRPOTrainer):  # type: ignore[misc]
        """`counts_by_prompt` maps a prompt's user text to its response count; `grammars` builds processors."""

        def __init__(self, *args: Any, counts_by_prompt: dict[str, int], grammars: GrammarCache, **kw: Any) -> None:
            super().__init__(*args, **kw)
            self._counts_by_prompt, self._grammars = counts_by_prompt, grammars
            self._row_counts: list[int] = []

        def _generate(self, prompts: list[Any]) -> Any:
            self._row_counts = [self._counts_by_prompt[_user_text(p)] for p in prompts]
            return super()._generate(prompts)

        def _generate_single_turn(self, prompt_ids: list[Any], *args: Any, **kw: Any) -> Any:
            if self.use_vllm or len(prompt_ids) != len(self._row_counts):  # vLLM has the regex; a tool turn: free
                return super()._generate_single_turn(prompt_ids, *args, **kw)  # type: ignore[no-untyped-call]
            model = self.accelerator.unwrap_model(self.model_wrapped)
            processors = LogitsProcessorList([self._grammars.processor(self._row_counts)])
            model.generate = partial(type(model).generate, model, logits_processor=processors)
            try:
                return super()._generate_single_turn(prompt_ids, *args, **kw)  # type: ignore[no-untyped-call]
            finally:
                del model.generate  # the class's method again

    return StructuredGRPO


def _user_text(prompt: Any) -> str:
    if isinstance(prompt, list):
        return "".join(str(m.get("content", "")) for m in prompt if m.get("role") == "user")
    return str(prompt)
