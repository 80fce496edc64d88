"""Identifiers: globally unique Snowflake ids (the gap-free sequences live in the store)."""
