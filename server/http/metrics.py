"""Prometheus metrics of one app (own registry, so several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from server.core.supervisor import STATES, EngineState
from server.core.types import JudgeResult

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the scrape

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)


class _Retries(Collector):
    """`grm_engine_retries_total{engine}`, read at scrape time from the remote engines' own counts."""

    def __init__(self) -> None:
        self.engines: dict[str, object] = {}

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "grm_engine_retries", "remote engine calls sent again after the connection dropped", labels=["engine"]
        )
        for name, engine in self.engines.items():
            family.add_metric([name], getattr(engine, "retried", 0))
        yield family


class Metrics:
    """Request counts and latency by route and status, judgments, kept fraction, tokens, in-flight,
    neutralized look-alikes by source and kind."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("grm_requests_total", "HTTP requests", ["route", "status"], registry=self.registry)
        self.latency = Histogram(
            "grm_request_latency_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.judgments = Counter(
            "grm_judgments_total", "sampled judgments by parse result", ["result"], registry=self.registry
        )
        self.completed = Counter(
            "grm_judgments_completed_total",
            "judgments whose score box was written by a constrained continuation, by parse result",
            ["result"],
            registry=self.registry,
        )
        self.kept_fraction = Histogram(
            "grm_kept_fraction",
            "kept / valid judgments per scored item",
            buckets=(0.1, 0.25, 0.5, 0.75, 0.9, 1.0),
            registry=self.registry,
        )
        self.neutralized = Counter(
            "grm_neutralized_total",
            "look-alikes of prompt structure rewritten in caller texts (a policy forging blocks or turns)",
            ["source", "kind"],
            registry=self.registry,
        )
        self.tokens = Counter("grm_tokens_total", "engine tokens", ["kind"], registry=self.registry)
        self.disconnects = Counter(
            "grm_client_disconnects_total", "requests cancelled by a client disconnect", registry=self.registry
        )
        self.in_flight = Gauge(
            "grm_requests_in_flight",
            "HTTP requests in flight (see grm_items_* for judged items)",
            registry=self.registry,
        )
        self.items_in_flight = Gauge(
            "grm_items_in_flight",
            "judged items holding a slot (a /score call, a batch item, a prompt group, a joint judgment each one)",
            registry=self.registry,
        )
        self.items_queued = Gauge(
            "grm_items_queued", "judged items waiting in the queue for a slot", registry=self.registry
        )
        self.items_refused = Counter(
            "grm_items_refused_total",
            "calls refused by admission (429): queue_full, or an item past queue_timeout_s",
            ["reason"],
            registry=self.registry,
        )
        self.engine_restarts = Counter(
            "grm_engine_restarts_total", "in-process engine restarts after a death", ["engine"], registry=self.registry
        )
        self._retries = _Retries()
        self.registry.register(self._retries)
        self.engine_states = Gauge(
            "grm_engine_state",
            "1 for the current state of each in-process engine",
            ["engine", "state"],
            registry=self.registry,
        )
        self.join_size = Histogram(
            "grm_reward_join_size",
            "responses per joint judgment of reward traffic (/get_reward, /reward)",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.join_callers = Histogram(
            "grm_reward_join_callers",
            "requests joined into one judgment",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.join_wait = Histogram(
            "grm_reward_join_wait_seconds",
            "time a request waited for others of its prompt",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )

        self.reattached_calls = Counter(
            "grm_reward_reattached_total",
            "reward calls answered by an identical call's judgment (a retry), by its state: in_flight or finished",
            ["state"],
            registry=self.registry,
        )
        self.abandoned_judgments = Counter(
            "grm_reward_abandoned_total",
            "reward judgments aborted after abandon_grace_s with all their callers disconnected",
            registry=self.registry,
        )

    # ReattachObserver
    def reattached(self, state: str) -> None:
        self.reattached_calls.labels(state).inc()

    def abandoned(self) -> None:
        self.abandoned_judgments.inc()

    # Supervisor listener
    def engine_state(self, engine: str, state: EngineState, restarted: bool) -> None:
        if restarted:
            self.engine_restarts.labels(engine).inc()
        for s in STATES:
            self.engine_states.labels(engine, s.value).set(1 if s is state else 0)

    def count_retries(self, engines: Mapping[str, object]) -> None:
        """Export the retry counts of the engines that keep one (`retried`: the remote ones)."""
        self._retries.engines = {name: e for name, e in engines.items() if isinstance(getattr(e, "retried", None), int)}

    # AdmissionObserver
    def admission(self, in_flight: int, queued: int) -> None:
        self.items_in_flight.set(in_flight)
        self.items_queued.set(queued)

    def refused(self, reason: str) -> None:
        self.items_refused.labels(reason).inc()

    # JoinObserver
    def joined(self, size: int, waits: Sequence[float]) -> None:
        self.join_size.observe(size)
        self.join_callers.observe(len(waits))
        for wait in waits:
            self.join_wait.observe(wait)

    # JudgeObserver
    def judged(self, result: JudgeResult) -> None:
        self.judgments.labels("valid").inc(result.valid)
        completed = [s for s in result.samples if s.completed]
        self.completed.labels("valid").inc(sum(s.scores is not None for s in completed))
        self.completed.labels("invalid").inc(sum(s.scores is None for s in completed))
        if result.valid:
            self.kept_fraction.observe(result.kept / result.valid)
        self.tokens.labels("prompt").inc(result.usage.prompt_tokens)
        self.tokens.labels("completion").inc(result.usage.completion_tokens)
        self.tokens.labels("cached").inc(result.usage.cached_tokens)
        for source, kind, n in result.neutralized.by_kind:
            self.neutralized.labels(source, kind).inc(n)

    def invalid(self, count: int) -> None:
        self.judgments.labels("invalid").inc(count)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
