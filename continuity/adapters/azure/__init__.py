"""Azure services with no local counterpart: ARM (Flexible Server), Key Vault, Event Grid, Azure Monitor."""
