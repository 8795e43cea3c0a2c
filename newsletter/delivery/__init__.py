"""Delivery: SMTP connections, rate limiting, DKIM, and the resumable outbox engine."""
