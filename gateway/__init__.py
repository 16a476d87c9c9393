"""The HTTP gateway: the REST API, live events (SSE, WebSocket) and the web dashboard.

Stateless: it reaches the coordinators only through the NATS API, like any client, so any number
can run behind a load balancer. `claw gateway start`; docs/Gateway.md.
"""
