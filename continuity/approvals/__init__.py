"""Four eyes: approval requests, decisions and who may make them."""
