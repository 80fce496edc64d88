"""The rules both stores apply, written once.

Each module here is pure: it takes records and plain values that a backend has read
inside its transaction and returns a decision, or raises the :class:`YimError` a client
sees. No connection and no SQL reach these modules, so the SQLite and the PostgreSQL
backend cannot drift apart on a rule, and each rule is tested by a table without a node.
"""
