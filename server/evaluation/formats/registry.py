"""One registry entry per benchmark: its name, how its rows are recognised, its converter, its official scorer and
where its rules come from. docs/standard_benchmarks.md's table is generated from it (`docs_table`).

Recognition cannot guess: `fit(row)` is STRICT when the row carries the benchmark's distinguishing features, LOOSE
when it has the benchmark's general shape without them, else None. A file is read as a benchmark only when its first
row fits exactly one entry strictly (formats/__init__.py); loose or several fits are errors naming the candidates.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.evaluation.benchmarks import scoring
from server.evaluation.benchmarks.rules import EXAMPLE_COUNTS
from server.evaluation.formats import converters as conv


class Fit(enum.Enum):
    STRICT = "strict"
    LOOSE = "loose"


@dataclass(frozen=True, slots=True)
class Benchmark:
    name: str  # the one spelling: --format, meta.benchmark, results' `official` keys
    recognised_by: str  # docs: the distinguishing features
    fit: Callable[[dict[str, Any]], Fit | None]
    convert: conv.Converter
    becomes: str
    score: scoring.OfficialScorer | None  # None: no official scorer (accuracy vs k only), said in the results
    rule: str
    source: str
    verified: str  # published files this entry was checked on, and where field names came from
    fields: tuple[str, ...]  # what every row needs (named when a row lacks them)
    both_orders: bool = False  # JudgeBench: the both-orders decision rule over the two presentation orders
    scores_ties: bool = False  # PandaLM: rows whose label is a tie are judged for the official score only


def _has(row: dict[str, Any], *fields: str) -> bool:
    return all(f in row for f in fields)


def _strs(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


RB2_SUBSETS = frozenset({"Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties"})


def _rewardbench(row: dict[str, Any]) -> Fit | None:
    if not (_has(row, "prompt", "chosen", "rejected", "subset") and isinstance(row["chosen"], str)):
        return None
    return Fit.STRICT if isinstance(row["rejected"], str) and row["subset"] in EXAMPLE_COUNTS else Fit.LOOSE


def _lists(row: dict[str, Any]) -> bool:
    return _has(row, "prompt", "chosen", "rejected") and _strs(row["chosen"]) and _strs(row["rejected"])


def _rewardbench2(row: dict[str, Any]) -> Fit | None:
    if not _lists(row):
        return None
    subset = row.get("subset")
    shaped = subset == "Ties" or (len(row["chosen"]) == 1 and len(row["rejected"]) == 3)
    if "num_correct" in row and subset in RB2_SUBSETS and shaped:
        return Fit.STRICT
    return Fit.LOOSE if "subset" in row and not _rmbench_features(row) else None


def _rmbench_features(row: dict[str, Any]) -> bool:
    return "num_correct" not in row and (
        "domain" in row or "error_key" in row or row.get("subset") in conv.RMBENCH_SUBSETS
    )


def _rmbench(row: dict[str, Any]) -> Fit | None:
    if not _lists(row):
        return None
    three = len(row["chosen"]) == 3 and len(row["rejected"]) == 3
    if three and _rmbench_features(row):
        return Fit.STRICT
    return Fit.LOOSE if three or "domain" in row else None


def _judgebench(row: dict[str, Any]) -> Fit | None:
    if not _has(row, "question", "response_A", "response_B"):
        return None
    return Fit.STRICT if row.get("label") in ("A>B", "B>A") else Fit.LOOSE


def _pandalm(row: dict[str, Any]) -> Fit | None:
    if not _has(row, "instruction", "response1", "response2"):
        return None
    return Fit.STRICT if _has(row, "annotator1", "annotator2", "annotator3") else Fit.LOOSE


def _rmb_pairwise(row: dict[str, Any]) -> Fit | None:
    if not _has(row, "conversation_input", "chosen", "reject"):
        return None
    return Fit.STRICT if "pair_uid" in row and isinstance(row["chosen"], dict) else Fit.LOOSE


def _rmb_bon(row: dict[str, Any]) -> Fit | None:
    if not _has(row, "conversation_input", "bon_best", "loser_list"):
        return None
    return Fit.STRICT if "bon_uid" in row else Fit.LOOSE


def _ppe_preference(row: dict[str, Any]) -> Fit | None:
    if not _has(row, "prompt", "response_1", "response_2", "winner"):
        return None
    return Fit.STRICT if "scores" not in row else Fit.LOOSE


def _ppe_correctness(row: dict[str, Any]) -> Fit | None:
    if not _has(row, "prompt", "response_1", "scores"):
        return None
    return Fit.STRICT if isinstance(row["scores"], list) and "winner" not in row else Fit.LOOSE


def _normalized(row: dict[str, Any]) -> Fit | None:
    if not _has(row, "prompt", "responses", "label"):
        return None
    return Fit.STRICT if isinstance(row["responses"], list) else Fit.LOOSE


RB = "allenai/reward-bench 05a9005"
BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        "rewardbench", "prompt, chosen and rejected strings, a RewardBench subset name", _rewardbench,
        conv.rewardbench, "a pair", scoring.rewardbench,
        "subset accuracy (chosen strictly above rejected); sections Chat / Chat Hard / Safety / Reasoning weighted "
        "by subset size (`math-prm` counted as 984, as upstream); `Score` = mean of the sections",
        f"{RB}: `rewardbench/constants.py` (EXAMPLE_COUNTS, SUBSET_MAPPING), `rewardbench/utils.py` "
        "(`calculate_scores_per_section`)",
        "Hugging Face only (`allenai/reward-bench`, split `filtered`): column names from upstream's loading code",
        fields=("prompt", "chosen", "rejected", "subset"),
    ),
    Benchmark(
        "rewardbench2", "`num_correct`; 1 chosen + 3 rejected (`Ties`: several chosen); a RewardBench 2 subset "
        "(Factuality, Precise IF, Math, Safety, Focus, Ties)", _rewardbench2,
        conv.rewardbench2, "best-of-N, one request (correct answers first)", scoring.rewardbench2,
        "non-Ties: credit 1/m when the chosen answer is one of m answers tied at the top, else 0; Ties: ids "
        "`ref:N`/`tied:N`, 0.30 tied acc + 0.30 ref acc + 0.20 correct-vs-incorrect margin above the spread among "
        "correct + 0.20 the same with the smaller of both margins + 0.01 mean tanh(margin / spread - 1); "
        "`Score` = mean of the subsets",
        f"{RB}: `rewardbench/utils.py` (`reroll_and_score_dataset`, `_compute_prompt_stats`, "
        "`process_single_model`), `scripts/run_v2.py`",
        "Hugging Face only (`allenai/reward-bench-2`, split `test`): column names from upstream's "
        "`load_bon_dataset_v2`",
        fields=("prompt", "chosen", "rejected", "subset", "num_correct"),
    ),
    Benchmark(
        "rm-bench", "exactly 3 chosen and 3 rejected, no `num_correct`, and `domain`, `error_key` or an RM-Bench "
        "subset", _rmbench,
        conv.rmbench, "9 pairs (chosen style i vs rejected style j)", scoring.rmbench,
        "3x3 matrix per domain: hard = above the diagonal (chosen less styled), normal = diagonal, easy = below; "
        "domain avg = mean of the three; overall hard / normal / easy / avg = mean over the domains (chat, code, "
        "math, safety = safety-refuse + safety-response); a per-domain file takes its domain from its name",
        "THU-KEG/RM-Bench 73c52d7: `scripts/utils.py` (`compute_accuracy`, `split_dataset_by_domain`), README "
        "(averaging)",
        "THU-KEG/RM-Bench 73c52d7 `data/chat_filtered.json` (129 rows), `code_filtered.json` (228), "
        "`safety-refuse_filtered.json` (284), `safety-response_filtered.json` (157); `math_filtered.json` and "
        "`total_dataset.json` not readable here (the total layout as its README documents)",
        fields=("prompt", "chosen", "rejected"),
    ),
    Benchmark(
        "judgebench", "question, response_A, response_B, label `A>B`/`B>A`", _judgebench,
        conv.judgebench, "a pair", scoring.labelled_accuracy,
        "accuracy; both orders: each order's decision votes +1 (agrees), -1 (opposite), 0 (tie); a pair is right "
        "if the sum > 0, inconsistent if 0",
        "ScalerLab/JudgeBench e2c52c2: `utils/metrics.py` (`compute_final_metrics`, `flip_judgment`)",
        "ScalerLab/JudgeBench e2c52c2 `data/dataset=judgebench,response_model=claude-3-5-sonnet-20240620.jsonl` "
        "(270 rows), `...response_model=gpt-4o-2024-05-13.jsonl` (350)",
        fields=("question", "response_A", "response_B", "label"),
        both_orders=True,
    ),
    Benchmark(
        "ppe-preference", "prompt, response_1, response_2, winner", _ppe_preference,
        conv.ppe_preference, "a pair (`tie*` left out)", scoring.labelled_accuracy,
        "accuracy against the human vote",
        "lmarena/PPE (human preference accuracy)",
        "Hugging Face only; lmarena/PPE could not be read here: field names as in the hand-made fixture, unverified",
        fields=("prompt", "response_1", "response_2", "winner"),
    ),
    Benchmark(
        "ppe-correctness", "prompt, response_1..K, scores (correct flags)", _ppe_correctness,
        conv.ppe_correctness, "best-of-K, one request", scoring.ppe_correctness,
        "pairwise accuracy over `sampled_conflict_pairs` (else all correct x incorrect pairs; a tie counts 1/2) "
        "and best-of-K (is the top-rewarded response correct)",
        "lmarena/PPE (correctness metrics)",
        "Hugging Face only; lmarena/PPE could not be read here: field names as in the hand-made fixture, unverified",
        fields=("prompt", "response_1", "scores"),
    ),
    Benchmark(
        "rmb-pairwise", "conversation_input, chosen/reject objects, pair_uid", _rmb_pairwise,
        conv.rmb_pairwise, "a pair (multi-turn prompt)", scoring.labelled_accuracy,
        "accuracy (chosen strictly above reject)",
        "Zhou-Zoey/RMB-Reward-Model-Benchmark 2be3180: `eval/scripts/my_run_rm.py`",
        "Zhou-Zoey/RMB-Reward-Model-Benchmark 2be3180 `RMB_dataset/Pairwise_set/**/*.json`: 46 files, 14543 rows (3 "
        "more files not readable here)",
        fields=("conversation_input", "chosen", "reject"),
    ),
    Benchmark(
        "rmb-bon", "conversation_input, bon_best, loser_list, bon_uid", _rmb_bon,
        conv.rmb_bon, "best-of-N, one request", scoring.labelled_accuracy,
        "accuracy: the best answer strictly above every loser",
        "Zhou-Zoey/RMB-Reward-Model-Benchmark 2be3180 (README; its code scores pairs only)",
        "Zhou-Zoey/RMB-Reward-Model-Benchmark 2be3180 `RMB_dataset/BoN_set/**/*.json`: all 49 files, 3786 rows",
        fields=("conversation_input", "bon_best", "loser_list"),
    ),
    Benchmark(
        "pandalm", "instruction, response1, response2, annotator1..3", _pandalm,
        conv.pandalm, "a pair, label = the annotators' majority", scoring.pandalm,
        "accuracy and macro precision / recall / F1 over the 3 labels {0 tie, 1, 2} against the majority; "
        "tie rows are judged for this score (a tie prediction: equal rewards) and left out of the accuracy rows",
        "WeOpenML/PandaLM 3871806: README (labels 0/1/2, three annotators), `data/testset-v1.json`",
        "WeOpenML/PandaLM 3871806 `data/testset-v1.json` (999 rows)",
        fields=("instruction", "response1", "response2", "annotator1", "annotator2", "annotator3"),
        scores_ties=True,
    ),
    Benchmark(
        "normalized", "prompt, responses, label", _normalized,
        conv.normalized, "as is", None,
        "no official scorer: accuracy vs k only",
        "this project (fields: [design.md](design.md#development-data))",
        "the development data",
        fields=("prompt", "responses", "label"),
    ),
)  # fmt: skip
REGISTRY: dict[str, Benchmark] = {b.name: b for b in BENCHMARKS}


def get(name: str) -> Benchmark:
    """The entry of `name`; an unknown name is an error naming the accepted ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; accepted: {', '.join(REGISTRY)}") from None


def fits(row: Any) -> tuple[list[str], list[str]]:
    """(entries the row fits strictly, entries it fits only loosely)."""
    strict: list[str] = []
    loose: list[str] = []
    if isinstance(row, dict):
        for entry in BENCHMARKS:
            fit = entry.fit(row)
            if fit is Fit.STRICT:
                strict.append(entry.name)
            elif fit is Fit.LOOSE:
                loose.append(entry.name)
    return strict, loose


def docs_table() -> str:
    """The markdown table of docs/standard_benchmarks.md, one row per entry."""
    lines = [
        "| `--format` | recognised by | becomes | official score | rules from | published files verified |",
        "|---|---|---|---|---|---|",
    ]
    for b in BENCHMARKS:
        cells = (f"`{b.name}`", b.recognised_by, b.becomes, b.rule, b.source, b.verified)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
