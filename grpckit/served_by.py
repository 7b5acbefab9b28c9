"""The replica's name in every response's metadata, under `served-by`.

It travels in the trailing metadata of unary responses, where it costs nothing extra, and in
the initial metadata of streams, so that a viewer knows its server from the start (and a
test knows which replica to stop).
"""

SERVED_BY = "served-by"

Metadata = tuple[tuple[str, str], ...]


def served_by(replica: str) -> Metadata:
    return ((SERVED_BY, replica),)
