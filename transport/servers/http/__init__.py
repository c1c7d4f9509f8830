"""The HTTP listener: health, metrics, the web pages and the bots' push endpoint, one ASGI
app (:mod:`.app`) served by hypercorn's trio worker (:mod:`.serve`)."""
