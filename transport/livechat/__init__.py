"""Where the humans are: the livechat backends a bot's sessions can go to.

Each backend implements the core's :class:`actors.ports.LivechatBackend`. The built-in desk
(:mod:`transport.livechat.desk`) is the core's own :class:`actors.Desk`, which agents reach
through the WebSocket protocol. External platforms share one engine
(:mod:`transport.livechat.platform`, with their tickets in :mod:`transport.livechat.tickets`)
and each has a connector: the generic signed webhook protocol (:mod:`transport.livechat.webhook`,
answered through :mod:`transport.livechat.actions`), Gorgias (:mod:`transport.livechat.gorgias`).
:mod:`transport.livechat.backends` builds them from the config.
"""
