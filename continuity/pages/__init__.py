"""Server-rendered pages of the Function App (estate dashboard, approvals): pure HTML from typed data."""
