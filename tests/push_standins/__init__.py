"""Local stand-ins for the push services: real protocol servers on 127.0.0.1 that check what the
real services check (signatures, headers, schema, the encrypted payload) and answer gone / 429 /
5xx / slow on demand, per target."""
