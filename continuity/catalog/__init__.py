"""The backup catalog: entries and statuses, manifests, ingest from storage, and its use cases."""
