"""The wire protocol, sans I/O: frames and their schemas, strict JSON, tokens and credentials,
and the per-client protocol session (:mod:`transport.protocol.peer`) that turns a client's
frames into calls on the core. It owns no socket and starts no task: the servers in
:mod:`transport.servers` feed it bytes and carry what it sends."""
