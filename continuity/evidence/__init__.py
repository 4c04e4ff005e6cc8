"""The tamper-evident evidence chain: records, hashing and verification rules."""
