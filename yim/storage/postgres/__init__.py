"""The PostgreSQL backend of the store (a cluster of nodes): its jobs per concept, its SQL
functions and its schema files."""
