"""The gateway: Pachyderm 1.7's gRPC API, the HTTP front and the dashboard,
over the bus. It owns no state.

- ``app/``: what the front doors do beyond forwarding one request (waits,
  pages, put-file and get-file bytes, backend health), transport-neutral;
- ``grpc/``, ``http/``, ``dashboard/``: transports that translate requests
  and replies and call ``app/``; none imports another;
- ``entrypoints/``: composes them (the dashboard mounted on the HTTP app)
  and starts the servers.

``principal.py`` (the bus call on a caller's behalf) and ``errors.py`` (the
one error mapping) are shared by every transport."""
