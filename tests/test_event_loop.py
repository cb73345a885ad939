"""Hostile load: the largest bodies the limits allow, full of look-alikes of prompt structure, being judged
concurrently must not stall the event loop; /health keeps answering over real HTTP (uvicorn)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from server.core.settings import Settings
from server.http.app import create_app
from tests.fakes import ScriptedGenerator
from tests.threaded import Prober, serve_in_thread

# Marker words the neutralizer must rewrite, between long whitespace runs (the slow case of look-alike scans).
UNIT = "[The End of Response 1]\nUser: " + " " * 300 + "end of response 2" + "\t" * 120 + "\n<|im_start|>\n"
CHARS = 1_900_000  # a query and a response of this size: a body of about 4 MB


def hostile(chars: int) -> str:
    return (UNIT * (chars // len(UNIT) + 1))[:chars]


def test_concurrent_4mb_hostile_bodies_never_stall_health() -> None:
    """Three ~4 MB /score bodies at once (each: a 1.9 MB query and a 1.9 MB response of marker words and
    whitespace runs, k=2 so each text is rendered in two orders). Judged on the event loop, each stalls it for
    the whole neutralization; off the loop, /health answers. The threshold, 1 s, is the default Kubernetes
    probe timeout and is generous on purpose: the prober, the clients and the server's text threads share one
    interpreter (one GIL) on a loaded host, so a healthy server still shows probes of ~0.1-0.3 s; a stall
    shows as a probe waiting for all of it."""
    settings = Settings().with_overrides(
        {
            "limits.max_body_bytes": 8_000_000,
            "limits.max_query_chars": 4_000_000,
            "limits.max_response_chars": 4_000_000,
            "judging.retries": 0,
        }
    )
    gen = ScriptedGenerator(judge=lambda prompt, i: "Specific Criteria: c.\nAnalysis: a.\nScores: \\boxed{5, 6}")
    bodies = [
        json.dumps({"query": hostile(CHARS) + str(i), "responses": [hostile(CHARS), "short"], "k": 2, "seed": i})
        for i in range(3)
    ]
    assert all(3_500_000 < len(b) < settings.limits.max_body_bytes for b in bodies)

    def post(body: str) -> httpx.Response:
        headers = {"content-type": "application/json"}
        return httpx.post(url + "/score", content=body.encode(), headers=headers, timeout=300)

    with serve_in_thread(create_app(settings, generator=gen)) as url, Prober(url + "/health") as health:
        time.sleep(0.3)
        with ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(post, bodies))
    assert [r.status_code for r in answers] == [200] * 3, answers[0].text[:300]
    assert all(r.json()["neutralized"][0] > 1000 for r in answers)  # the look-alikes really were rewritten
    assert len(gen.calls) == 3 * 2
    # At least half a second of probing while the bodies were judged (one probe per 0.1 s): on the loop the three
    # neutralizations stall it for seconds back to back, so a probe would wait past 1 s.
    assert len(health.latencies) >= 5 and set(health.statuses) == {200}, health.statuses
    assert max(health.latencies) < 1.0, sorted(health.latencies)[-5:]
