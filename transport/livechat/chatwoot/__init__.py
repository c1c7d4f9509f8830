"""The Chatwoot platform: a bot's livechat sessions in a Chatwoot API-channel inbox.

:mod:`~transport.livechat.chatwoot.options` reads ``[bots.<id>.livechat.options]``,
:mod:`~transport.livechat.chatwoot.connector` calls Chatwoot's Application API,
:mod:`~transport.livechat.chatwoot.webhook` takes the inbox's webhooks, and
:mod:`~transport.livechat.chatwoot.setup` is ``switchover chatwoot setup``.
"""
