"""The SQLite backend of the store (one node): its jobs per concept and its schema files."""
