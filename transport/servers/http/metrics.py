"""``/metrics``: the core's counters and gauges in Prometheus' exposition format.

Each app keeps its own ``CollectorRegistry`` (``HttpApp.registry``), never the process-wide
default, so several servers in one process (tests, embedding) each report their own. Other
parts of a server add theirs to it (a ``Collector``, or a metric made with
``registry=app.registry``). The format is the one the scraper asks for in ``Accept``
(prometheus-client's own choice: the classic text format unless OpenMetrics is asked for).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, cast

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from transport.protocol.services import Services

if TYPE_CHECKING:
    from transport.servers.http.app import HttpApp


class CoreMetrics(Collector):
    """The switchboard's and the desk's figures, read at each scrape."""

    def __init__(self, services: Services, started_at: float, clock: Callable[[], float]) -> None:
        self.services = services
        self.started_at = started_at
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        board, desk = self.services.board, self.services.desk
        stats = board.stats
        yield CounterMetricFamily(
            "switchover_conversations_started_total",
            "Conversations brought into memory (new, restored or woken from the store).",
            value=stats.started,
        )
        yield GaugeMetricFamily(
            "switchover_conversations_active",
            "Conversations in memory now.",
            value=board.active_conversations,
        )
        yield GaugeMetricFamily(
            "switchover_conversations_dormant",
            "Conversations out of memory whose clients are still connected.",
            value=board.dormant_conversations,
        )
        yield CounterMetricFamily(
            "switchover_conversations_hibernated_total",
            "Idle conversations that left memory (they come back from the store).",
            value=stats.hibernated,
        )
        yield CounterMetricFamily(
            "switchover_conversation_restarts_total",
            "Conversation actors restarted after a failure.",
            value=stats.restarts,
        )
        yield CounterMetricFamily(
            "switchover_conversation_escalations_total",
            "Conversations taken out of memory because restarting did not help.",
            value=stats.escalations,
        )
        yield GaugeMetricFamily(
            "switchover_queue_length",
            "Livechat sessions waiting for an agent.",
            value=desk.queue_length,
        )
        yield GaugeMetricFamily(
            "switchover_agents_available",
            "Agents connected and online.",
            value=desk.agents_available,
        )
        yield GaugeMetricFamily(
            "switchover_uptime_seconds",
            "Seconds since the HTTP listener started.",
            value=round(self.clock() - self.started_at, 3),
        )


def registry_for(
    services: Services, started_at: float, clock: Callable[[], float] = time.monotonic
) -> CollectorRegistry:
    """A registry of its own holding the core's metrics."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(CoreMetrics(services, started_at, clock))
    return registry


async def scrape(request: Request) -> Response:
    registry = cast("HttpApp", request.app).registry
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(registry), media_type=content_type)
