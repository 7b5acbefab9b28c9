"""The replica's name in every response's metadata, under `served-by`.

It travels in the trailing metadata of every response, where it costs nothing extra (a
refused call included), and in the initial metadata of every stream that sends a message,
with its first, so that a viewer knows its server from the start (and a test knows which
replica to stop); a stream refused before its first message is one trailers-only answer.
"""

SERVED_BY = "served-by"

Metadata = tuple[tuple[str, str], ...]


def served_by(replica: str) -> Metadata:
    return ((SERVED_BY, replica),)
