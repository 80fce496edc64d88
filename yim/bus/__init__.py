"""Event delivery between the services and the connections that should see an event:
in-process for one node; across nodes (Redis) in cluster mode."""
