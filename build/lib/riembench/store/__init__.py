"""The run store: immutable records, claims, migration of old stores, and the riembench-store command."""
