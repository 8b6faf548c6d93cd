"""Repositories: the only code that speaks SQL. Services call them; they know nothing of transports."""
