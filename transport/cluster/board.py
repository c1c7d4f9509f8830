"""The switchboard of a cluster node: conversations this node owns are served by their
actors here, as on one node; the others go through :class:`~transport.cluster.routing.Router`."""

from __future__ import annotations

import logging
from typing import Any

from actors.model.events import Event
from actors.model.records import Party
from actors.ports import Sink
from actors.trio.conversation import Reply
from actors.trio.switchboard import Overloaded, Switchboard
from transport.cluster.routing import Router

log = logging.getLogger("switchover.cluster")


class ClusterSwitchboard(Switchboard):
    def __init__(self, *args: Any, router: Router, **options: Any) -> None:
        # The core's clock is the engine's (transport/cluster/clock.py).
        options.setdefault("clock", router.store.clock)
        super().__init__(*args, **options)
        self.router = router

    def submit(
        self,
        conversation_id: str,
        event: Event,
        reply: Reply | None = None,
        *,
        origin: Sink | None = None,
        message_id: str | None = None,
        input_id: str | None = None,
    ) -> None:
        if self.router.owns(conversation_id):
            super().submit(
                conversation_id,
                event,
                reply,
                origin=origin,
                message_id=message_id,
                input_id=input_id,
            )
        else:
            self.router.forward(conversation_id, event, reply, origin, message_id)

    def post(self, conversation_id: str, event: Event) -> None:
        if self.router.owns(conversation_id):
            super().post(conversation_id, event)
            return
        try:
            self.router.forward(conversation_id, event, None, None, None)
        except Overloaded:
            log.warning("dropped an event for %s: too many inputs in flight", conversation_id)

    def subscribe(self, conversation_id: str, sink: Sink, after_seq: int | None = None) -> None:
        if self.router.owns(conversation_id):
            super().subscribe(conversation_id, sink, after_seq)
        else:
            self.router.watch(conversation_id, sink, after_seq)

    def unsubscribe(self, conversation_id: str, sink: Sink) -> None:
        self.router.unwatch(conversation_id, sink)
        super().unsubscribe(conversation_id, sink)

    def replay(
        self,
        conversation_id: str,
        sink: Sink,
        after_seq: int,
        party: Party,
        agent_id: str | None = None,
    ) -> None:
        if self.router.owns(conversation_id):
            super().replay(conversation_id, sink, after_seq, party, agent_id)
        else:
            self.router.replay(conversation_id, sink, after_seq, party, agent_id)
