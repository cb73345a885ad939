"""`grm-server eval` end to end on real items against the live grm-server (real uvicorn, real CPU engine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.live

SAMPLE = ROOT / "tests" / "data" / "dev_sample.jsonl"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_eval(live_url: str, out: Path) -> subprocess.CompletedProcess[str]:
    # concurrency 1 keeps each burst at 3 short prompts (greedy + 2 samples) on the shared 2-core engine
    cmd = [
        sys.executable, "-m", "server.cli", "eval", str(SAMPLE), "--url", live_url, "--out", str(out),
        "--limit", "2", "--k", "1,2", "--max-tokens", "112", "--concurrency", "1", "--seed", "5", "--resamples", "200",
        "--no-progress",
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ))


def test_eval_cli_on_real_items_against_the_live_server(live_url: str, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    proc = run_eval(live_url, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "voting@2" in proc.stdout and "2 items evaluated of 2 selected" in proc.stdout

    results = json.loads((out / "results.json").read_text())
    assert (out / "accuracy_vs_k.png").read_bytes()[:8] == PNG_MAGIC
    assert results["config"]["model"] == "smollm2-135m-instruct" and results["config"]["meta_rm"] is None
    assert results["items"]["selected"] == results["items"]["judged"] == results["items"]["evaluated"] == 2
    assert [r["name"] for r in results["rows"]] == ["greedy", "voting@1", "voting@2"]
    for row in results["rows"]:
        assert row["n"] == 2 and 0.0 <= row["ci_low"] <= row["accuracy"] <= row["ci_high"] <= 1.0
        assert row["strict_accuracy"] <= row["accuracy"] and 0 <= row["ties"] <= 2
    assert results["judgments"] == {
        "greedy_judgments": 2,
        "greedy_valid": 2,
        "sampled_judgments": 4,
        "sampled_valid": 4,
    }
    pb = results["position_bias"]["sampled"]
    assert pb["first"]["n"] + pb["last"]["n"] == 4  # pairs: the best is shown either first or last
    assert results["usage"]["engine_calls"] == 2 * (1 + 2)  # greedy: 1 order; k=2: min(k, n) = 2 orders
    assert (
        sum(results["breakdown"]["by_file"]["voting@2"][f]["n"] for f in results["breakdown"]["by_file"]["voting@2"])
        == 2
    )

    records = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    for rec in records:
        sampled = rec["sampled"]["samples"]
        assert len(sampled) == 2 and all(sorted(s["order"]) == [0, 1] for s in sampled)
        assert (
            rec["perm"][rec["label"]]
            == json.loads(
                next(line for line in SAMPLE.read_text().splitlines() if json.loads(line)["id"] == rec["id"])
            )["label"]
        )

    again = run_eval(live_url, out)  # a finished run: nothing is judged again, same numbers
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "items.jsonl").read_text().count("\n") == 2
    assert json.loads((out / "results.json").read_text())["rows"] == results["rows"]
