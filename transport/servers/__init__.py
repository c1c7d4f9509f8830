"""The trio servers: they own the sockets, the timeouts and the tasks, and hand every frame
and request to the sans-I/O protocol; :mod:`transport.servers.runtime` puts a whole server
together and stops it cleanly."""
