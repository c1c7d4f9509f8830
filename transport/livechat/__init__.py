"""Where the humans are: the livechat backends a bot's sessions can go to.

Each backend implements the core's :class:`actors.ports.LivechatBackend`. The built-in desk
(:mod:`transport.livechat.desk`) is the core's own :class:`actors.Desk`, which agents reach
through the WebSocket protocol; external platforms live beside it, one module each.
"""
