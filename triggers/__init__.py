"""HTTP, timer and Event Grid functions: parse, authorise, start or signal orchestrations; nothing more."""
