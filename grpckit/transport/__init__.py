"""What both ends of a connection must agree on: mutual TLS and the HTTP/2 channel options.

Shared by server and client alike, so that neither has to import the other.
"""
