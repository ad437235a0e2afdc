"""Credentials: password hashes, access tokens (JWT), API keys, the server's key file,
and roles. Pure functions over values; the database side is ``infra.accounts``."""
