"""The server's Prometheus metrics (`GET /metrics`): HTTP requests and latency from
prometheus-fastapi-instrumentator, and the engine's own: answers and their latency by route and status, batch
sizes per model stage, requests in progress, 429s, time-outs, feature-cache hits and misses, LLM tokens in and out.

Each server keeps its own registry, so two apps in one process (tests, replicas) never share counters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from vqagraph.answer import Answer
    from vqagraph.engine import Engine

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class FeatureCacheCollector(Collector):
    """Hits and misses of the engine's feature cache, read when scraped."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Any]:
        cache = self.engine.tools.features
        hits = CounterMetricFamily("vqagraph_feature_cache_hits", "feature-cache lookups that found the features")
        hits.add_metric([], cache.hits)
        misses = CounterMetricFamily("vqagraph_feature_cache_misses", "feature-cache lookups that missed")
        misses.add_metric([], cache.misses)
        yield hits
        yield misses


@dataclass
class ServerMetrics:
    registry: CollectorRegistry
    answers: Counter
    seconds: Histogram
    batch_size: Histogram
    queue: Gauge
    rejected: Counter
    tokens: Counter
    timed_out: Counter

    @classmethod
    def for_engine(cls, engine: Engine) -> ServerMetrics:
        registry = CollectorRegistry()
        metrics = cls(
            registry=registry,
            answers=Counter("vqagraph_answers", "questions answered, by the route that answered and status",
                            ["route", "status"], registry=registry),
            seconds=Histogram("vqagraph_answer_seconds", "seconds per answered question, by route", ["route"],
                              registry=registry),
            batch_size=Histogram("vqagraph_batch_size", "calls per batched model call, by stage", ["stage"],
                                 buckets=BATCH_BUCKETS, registry=registry),
            queue=Gauge("vqagraph_requests_in_progress", "requests admitted and not yet answered", registry=registry),
            rejected=Counter("vqagraph_requests_rejected", "requests answered 429 (too many in progress)",
                             registry=registry),
            tokens=Counter("vqagraph_llm_tokens", "LLM tokens read (prompt) and written (completion)", ["kind"],
                           registry=registry),
            timed_out=Counter("vqagraph_requests_timed_out", "requests answered 504 (or a stream ended) at the "
                              "request deadline; their work may still be running", registry=registry),
        )
        registry.register(FeatureCacheCollector(engine))
        engine.tools.batch_observers.append(lambda stage, size: metrics.batch_size.labels(stage).observe(size))
        return metrics

    def answered(self, answer: Answer, prompt_tokens: int, completion_tokens: int) -> None:
        self.answers.labels(answer.route, "ok").inc()
        self.seconds.labels(answer.route).observe(answer.trace.timings.get("total", 0.0))
        self.tokens.labels("prompt").inc(prompt_tokens)
        self.tokens.labels("completion").inc(completion_tokens)

    def failed(self, status: int) -> None:
        self.answers.labels("none", str(status)).inc()
