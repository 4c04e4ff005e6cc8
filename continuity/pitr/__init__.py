"""Point-in-time recovery of the servers we run, from their WAL archive (Barman cloud layout in Blob)."""
