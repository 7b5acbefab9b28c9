"""The shared runtime of every server: TLS, health, reflection, access logs, shutdown.

Services stay small because everything they have in common lives here once.
"""
