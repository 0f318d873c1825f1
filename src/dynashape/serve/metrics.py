"""Prometheus metrics of one server (one registry per app, so two apps in a process never clash).

    dynashape_requests_total{outcome}     ok | cancelled | invalid | busy | unavailable | error
    dynashape_prompt_tokens_total         prompt tokens admitted into the batch
    dynashape_generated_tokens_total      tokens the engine generated
    dynashape_queue_depth                 requests waiting for a slot (read at scrape time)
    dynashape_running_batch               sequences in the running decode batch (read at scrape time)
    dynashape_ttft_seconds                arrival -> first token handed to the request (histogram)
    dynashape_tpot_seconds                time per output token after the first, per request (histogram)

Buckets span a GPU's milliseconds and a CPU's seconds, so one server definition fits both.
"""
from __future__ import annotations

OUTCOMES = ("ok", "cancelled", "invalid", "busy", "unavailable", "error")
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TPOT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("dynashape_requests", "Completion requests by outcome", ["outcome"], registry=r)
        for outcome in OUTCOMES:        # every series exists from the start (rate() needs a zero)
            self.requests.labels(outcome)
        self.prompt_tokens = Counter("dynashape_prompt_tokens", "Prompt tokens admitted", registry=r)
        self.generated_tokens = Counter("dynashape_generated_tokens", "Tokens generated", registry=r)
        self.queue_depth = Gauge("dynashape_queue_depth", "Requests waiting for a batch slot", registry=r)
        self.running_batch = Gauge("dynashape_running_batch", "Sequences in the running decode batch", registry=r)
        self.ttft = Histogram("dynashape_ttft_seconds", "Time to first token", buckets=TTFT_BUCKETS, registry=r)
        self.tpot = Histogram("dynashape_tpot_seconds", "Time per output token after the first",
                              buckets=TPOT_BUCKETS, registry=r)

    def outcome(self, name: str) -> None:
        self.requests.labels(name).inc()

    def watch(self, scheduler) -> None:
        """Gauges read the scheduler when scraped (no thread keeps them up to date)."""
        self.queue_depth.set_function(lambda: scheduler.queued)
        self.running_batch.set_function(lambda: scheduler.running)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
