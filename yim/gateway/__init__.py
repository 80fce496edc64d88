"""The gateway: HTTP routes, WebSocket connections, and the table of live connections."""
