"""What every call goes through on a server, a module per job, composed by one wrapper.

Authorization, budgets, callers, the access log, cancellation: per call, never per process.
"""
