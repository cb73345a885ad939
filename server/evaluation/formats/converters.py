"""Converters from each benchmark's published row layout to the normalized item dict (MANIFEST.md of the dev data).

Every converter takes (row, index in the file, file name), returns a list of normalized items (RM-Bench gives 9 pairs
per row) and raises KeyError/TypeError/ValueError on a malformed row; `load_benchmark` turns those into a FormatError
naming the file, line and field. `meta.benchmark` is the registry name (formats/registry.py), the one spelling used by
`--format`, in results and in the official scores.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

Item = dict[str, Any]


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"field {field!r} must be a string, got {type(value).__name__}")
    return value


def _texts(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"field {field!r} must be a non-empty list of strings")
    return [_text(v, field) for v in value]


def _item(
    row_id: Any, source: str, prompt: Any, responses: list[str], label: int | None, category: Any, meta: Item
) -> Item:
    return {
        "id": str(row_id),
        "source": source,
        "prompt": prompt,
        "responses": responses,
        "label": label,
        "category": None if category is None else str(category),
        "meta": meta,
    }


def normalized(row: Item, index: int, file: str = "") -> list[Item]:
    _texts(row["responses"], "responses")
    label = row["label"]
    if label is not None and not (isinstance(label, int) and 0 <= label < len(row["responses"])):
        raise ValueError(f"field 'label' must be null or an index into 'responses', got {label!r}")
    prompt = row["prompt"]
    if not isinstance(prompt, str):
        if not isinstance(prompt, list) or not all(isinstance(m, dict) and "content" in m for m in prompt):
            raise ValueError("field 'prompt' must be a string or a list of {role, content} messages")
    return [{**row, "id": str(row.get("id", index))}]


def rewardbench(row: Item, index: int, file: str = "") -> list[Item]:
    subset = _text(row["subset"], "subset")
    responses = [_text(row["chosen"], "chosen"), _text(row["rejected"], "rejected")]
    meta = {"benchmark": "rewardbench", "subset": subset}
    return [
        _item(row.get("id", index), f"rewardbench/{subset}", _text(row["prompt"], "prompt"), responses, 0, subset, meta)
    ]


def rewardbench2(row: Item, index: int, file: str = "") -> list[Item]:
    """All answers in one best-of-N request, the `num_correct` correct ones first (as upstream's unrolling)."""
    subset = _text(row["subset"], "subset")
    chosen, rejected = _texts(row["chosen"], "chosen"), _texts(row["rejected"], "rejected")
    num_correct = row["num_correct"]
    if num_correct != len(chosen):
        raise ValueError(
            f"field 'num_correct' ({num_correct!r}) must equal the number of chosen answers ({len(chosen)})"
        )
    meta = {"benchmark": "rewardbench2", "subset": subset, "num_correct": num_correct}
    prompt = _text(row["prompt"], "prompt")
    return [_item(row.get("id", index), f"rewardbench2/{subset}", prompt, chosen + rejected, 0, subset, meta)]


# The subsets of RM-Bench's per-domain files (which carry no `domain`), by domain.
RMBENCH_SUBSETS = {
    "alpacaeval": "chat", "bigcode/humanevalpack": "code", "refusals-dangerous": "safety-refuse",
    "refusals-offensive": "safety-refuse", "xstest-should-refuse": "safety-refuse",
    "xstest-should-respond": "safety-response",
}  # fmt: skip
RMBENCH_DOMAINS = ("chat", "code", "math", "safety-refuse", "safety-response")


def rmbench_domain(row: Item, file: str) -> str:
    """`domain` of the total file; else the per-domain file's name (`chat_filtered.json`); else the subset's domain."""
    if "domain" in row:
        return _text(row["domain"], "domain")
    name = file.rsplit("/", 1)[-1].lower()
    for domain in RMBENCH_DOMAINS:
        if name.endswith(f"{domain}_filtered.json"):
            return domain
    subset = row.get("subset")
    if isinstance(subset, str) and subset in RMBENCH_SUBSETS:
        return RMBENCH_SUBSETS[subset]
    raise ValueError(
        f"no 'domain' field, and neither the file name nor the subset names one of {list(RMBENCH_DOMAINS)}"
    )


def rmbench(row: Item, index: int, file: str = "") -> list[Item]:
    """Each of the 3 chosen styles against each of the 3 rejected styles: 9 pairs, chosen first (label 0)."""
    chosen, rejected = _texts(row["chosen"], "chosen"), _texts(row["rejected"], "rejected")
    if len(chosen) != 3 or len(rejected) != 3:
        raise ValueError("fields 'chosen' and 'rejected' must each hold 3 responses (concise, detailed, markdown)")
    domain, row_id, prompt = rmbench_domain(row, file), row.get("id", index), _text(row["prompt"], "prompt")
    return [
        _item(
            f"{row_id}:c{i}r{j}",
            f"rmbench/{domain}",
            prompt,
            [chosen[i], rejected[j]],
            0,
            domain,
            {"benchmark": "rm-bench", "domain": domain, "row": str(row_id), "chosen_style": i, "rejected_style": j},
        )
        for i in range(3)
        for j in range(3)
    ]


def judgebench(row: Item, index: int, file: str = "") -> list[Item]:
    label = row["label"]
    if label not in ("A>B", "B>A"):
        raise ValueError(f"field 'label' must be 'A>B' or 'B>A', got {label!r}")
    source = str(row.get("source") or "judgebench")
    responses = [_text(row["response_A"], "response_A"), _text(row["response_B"], "response_B")]
    meta = {"benchmark": "judgebench", "source": source}
    return [
        _item(
            row.get("pair_id", index),
            f"judgebench/{source}",
            _text(row["question"], "question"),
            responses,
            0 if label == "A>B" else 1,
            source.split("-")[0],
            meta,
        )
    ]


_WINNERS = {"model_a": 0, "response_1": 0, "a": 0, "1": 0, "model_b": 1, "response_2": 1, "b": 1, "2": 1}


def ppe_preference(row: Item, index: int, file: str = "") -> list[Item]:
    winner = str(row["winner"]).lower()
    label = _WINNERS.get(winner)
    if label is None and not winner.startswith("tie"):
        raise ValueError(f"field 'winner' must be model_a, model_b or tie*, got {row['winner']!r}")
    responses = [_text(row["response_1"], "response_1"), _text(row["response_2"], "response_2")]
    meta = {"benchmark": "ppe-preference", "winner": winner}
    category = row.get("language") or row.get("category")
    row_id = row.get("question_id", row.get("id", index))
    return [_item(row_id, "ppe/human_preference", _text(row["prompt"], "prompt"), responses, label, category, meta)]


def ppe_correctness(row: Item, index: int, file: str = "") -> list[Item]:
    """Best-of-K: `response_1..K` with `scores` (correct flags); the label is the first correct response."""
    flags = row["scores"]
    if not isinstance(flags, list) or not flags:
        raise ValueError("field 'scores' must be a non-empty list of correctness flags")
    correct = [bool(f) for f in flags]
    responses = [_text(row[f"response_{i + 1}"], f"response_{i + 1}") for i in range(len(correct))]
    label = correct.index(True) if any(correct) and not all(correct) else None
    pairs = row.get("sampled_conflict_pairs")
    meta: Item = {"benchmark": "ppe-correctness", "correct": correct}
    if isinstance(pairs, list):
        meta["conflict_pairs"] = [[int(a), int(b)] for a, b in pairs]
    prompt = _text(row["prompt"], "prompt")
    row_id = row.get("question_id", row.get("id", index))
    return [_item(row_id, f"ppe/{row.get('benchmark_name') or 'correctness'}", prompt, responses, label, None, meta)]


def _conversation(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ValueError("field 'conversation_input' must be a non-empty list of {role, content} turns")
    return [
        {"role": str(t["role"]).lower(), "content": _text(t["content"], "conversation_input.content")} for t in value
    ]


def _answer(value: Any, field: str) -> str:
    if not isinstance(value, dict):
        raise ValueError(f"field {field!r} must be an object with an 'answer'")
    return _text(value["answer"], f"{field}.answer")


def rmb_pairwise(row: Item, index: int, file: str = "") -> list[Item]:
    responses = [_answer(row["chosen"], "chosen"), _answer(row["reject"], "reject")]
    category = row.get("category_path")
    meta = {"benchmark": "rmb-pairwise", "category_path": category}
    prompt = _conversation(row["conversation_input"])
    return [_item(row.get("pair_uid", index), "rmb/pairwise", prompt, responses, 0, category, meta)]


def rmb_bon(row: Item, index: int, file: str = "") -> list[Item]:
    losers = row["loser_list"]
    if not isinstance(losers, list) or not losers:
        raise ValueError("field 'loser_list' must be a non-empty list of {answer} objects")
    responses = [_answer(row["bon_best"], "bon_best")] + [_answer(x, "loser_list[]") for x in losers]
    category = row.get("category_path")
    meta = {"benchmark": "rmb-bon", "category_path": category}
    prompt = _conversation(row["conversation_input"])
    return [_item(row.get("bon_uid", index), "rmb/bon", prompt, responses, 0, category, meta)]


def _scalar_text(value: Any, field: str) -> str:
    """A response the published file stores as a JSON scalar (testset-v1.json has `true` for the answer "True")."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int | float):
        return str(value)
    return _text(value, field)


def pandalm(row: Item, index: int, file: str = "") -> list[Item]:
    """`data/testset-v1.json`: majority of annotator1..3 (1: response1, 2: response2, 0: tie); no majority is a tie."""
    votes = [int(row[f"annotator{i}"]) for i in (1, 2, 3)]
    if any(v not in (0, 1, 2) for v in votes):
        raise ValueError(f"fields 'annotator1..3' must be 0, 1 or 2, got {votes}")
    choice, count = Counter(votes).most_common(1)[0]
    majority = choice if count >= 2 else 0
    prompt = _text(row["instruction"], "instruction")
    if row.get("input"):
        prompt = f"{prompt}\n\n{_text(row['input'], 'input')}"
    responses = [_scalar_text(row["response1"], "response1"), _scalar_text(row["response2"], "response2")]
    meta = {"benchmark": "pandalm", "votes": votes, "majority": majority}
    label = None if majority == 0 else majority - 1
    category = row.get("motivation_app")
    return [_item(row.get("idx", index), "pandalm/testset-v1", prompt, responses, label, category, meta)]


Converter = Callable[[Item, int, str], list[Item]]
