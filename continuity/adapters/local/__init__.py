"""The local stack (clusters, Azurite) and local files: users, secrets."""
