"""The clustered store's figures for ``/metrics``, read at each scrape."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from transport.cluster.store import ValkeyStore


class ClusterMetrics(Collector):
    def __init__(self, store: ValkeyStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        store, leases = self.store, self.store.leases
        yield GaugeMetricFamily(
            "switchover_cluster_partitions_owned",
            "Partitions this node holds the lease of.",
            value=len(leases.tokens),
        )
        yield GaugeMetricFamily(
            "switchover_cluster_live_nodes", "Nodes seen alive.", value=leases.live_nodes
        )
        yield CounterMetricFamily(
            "switchover_cluster_lease_renewals_total",
            "Partition leases renewed by this node.",
            value=leases.renewals,
        )
        yield CounterMetricFamily(
            "switchover_cluster_takeovers_total",
            "Partitions this node took over after it started (another node stopped or died).",
            value=leases.takeovers,
        )
        yield CounterMetricFamily(
            "switchover_cluster_commits_total", "Commits made durable.", value=store.commits
        )
        yield CounterMetricFamily(
            "switchover_cluster_fenced_commits_total",
            "Commits refused because the partition's lease had passed to another node.",
            value=store.fenced,
        )
        router = store.router
        yield CounterMetricFamily(
            "switchover_cluster_inputs_forwarded_total",
            "Inputs this node sent to the owner of their conversation.",
            value=0 if router is None else router.forwarded,
        )
        yield CounterMetricFamily(
            "switchover_cluster_inputs_served_total",
            "Inputs other nodes sent this node, as the owner of their conversation.",
            value=0 if router is None else router.served,
        )
        yield GaugeMetricFamily(
            "switchover_cluster_inbound_lag_seconds",
            "How long the latest input routed to this node waited in its inbound stream.",
            value=0.0 if router is None else router.inbound_lag,
        )
        yield GaugeMetricFamily(
            "switchover_cluster_inputs_waiting",
            "Inputs this node sent to other nodes and not answered yet.",
            value=0 if router is None else len(router.pending),
        )
        desk = store.desk
        yield GaugeMetricFamily(
            "switchover_cluster_desk_owner",
            "1 when this node runs the cluster's desk.",
            value=1 if desk is not None and desk.owner else 0,
        )
        yield CounterMetricFamily(
            "switchover_cluster_desk_takeovers_total",
            "Times this node took the desk over after it started (its owner stopped or died).",
            value=0 if desk is None else desk.takeovers,
        )
        skew = store.clock.skew()
        if skew is not None:
            yield GaugeMetricFamily(
                "switchover_cluster_engine_clock_ahead_seconds",
                "How far the engine's clock is ahead of this node's own (the node follows it).",
                value=skew,
            )
