"""A server's life from start to exit: settings to ports, workers, drain, grace and exit code.

The entry point, the server and the services it hosts, their health, reflection and upkeep.
"""
