"""Domain services, one module per concept. Each state-changing operation is one named
action function that validates, writes through the store, and emits its events."""
