"""The client side: channels that follow renewed certificates, and the health probe.

What services, clients and tests use to call a server; nothing here runs inside one.
"""
