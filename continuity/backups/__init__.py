"""Taking backups: ids, blob names, tags and manifests, decided without I/O."""
