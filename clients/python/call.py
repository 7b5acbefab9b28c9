"""A client of the three services in plain Python, from code generated from proto/ alone
(docs/clients.md says how; nothing of this project's own Python is imported).

    PYTHONPATH=clients/python/gen python clients/python/call.py [HOST]

Calls each service over mutual TLS with the certificates in certs/ (HOST defaults to
127.0.0.1, the edge's published ports), prints one JSON line per call, exits 1 on a surprise.
"""

import json
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from api import cheese_pb2, cheese_pb2_grpc, movie_pb2, movie_pb2_grpc, soccer_pb2, soccer_pb2_grpc

CERTS = Path("certs")
MARTIAN = "a8034f44-aee4-44cf-b32c-74cf452aaaae"


def channel(host: str, port: int) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(CERTS / "ca.crt").read_bytes(),
        private_key=(CERTS / "client.key").read_bytes(),
        certificate_chain=(CERTS / "client.crt").read_bytes(),
    )
    # A raw frame of a large match exceeds gRPC's 4 MiB default.
    options = [("grpc.max_receive_message_length", 32 << 20)]
    return grpc.secure_channel(f"{host}:{port}", credentials, options=options)


def main() -> None:
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    cheese, movie, soccer = (channel(host, port) for port in (50051, 50052, 50053))
    done: dict[str, str | int] = {}

    order = cheese_pb2_grpc.CheeseServiceStub(cheese).Order
    answer = order(cheese_pb2.CheeseRequest(type=cheese_pb2.BRIE), timeout=10, wait_for_ready=True)
    done["Order"] = cheese_pb2.CheeseType.Name(answer.type)

    movies = movie_pb2_grpc.MovieStub(movie)
    found = movies.GetMovieByID(movie_pb2.MovieID(id=MARTIAN), timeout=10, wait_for_ready=True)
    done["GetMovieByID"] = found.title
    try:
        movies.GetMovieByID(movie_pb2.MovieID(id="no-such-movie"), timeout=10)
    except grpc.RpcError as error:
        done["GetMovieByID unknown"] = error.code().name
    done["GetListMovies"] = len(list(movies.GetListMovies(movie_pb2.Empty(), timeout=10)))

    match = soccer_pb2.Match(id="demo", encoding=soccer_pb2.JPEG, max_frames=3)
    frames = list(soccer_pb2_grpc.SoccerStub(soccer).Watch(match, timeout=30, wait_for_ready=True))
    done["Watch"] = len(frames)

    check = health_pb2_grpc.HealthStub(soccer).Check
    status = check(health_pb2.HealthCheckRequest(service="stream.Soccer"), timeout=10).status
    done["Health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(status)

    print(json.dumps(done))
    expected = {
        "Order": "BRIE",
        "GetMovieByID": "The Martian",
        "GetMovieByID unknown": "NOT_FOUND",
        "Watch": 3,
        "Health": "SERVING",
    }
    surprises = {k: v for k, v in expected.items() if done.get(k) != v}
    if surprises or not isinstance(done["GetListMovies"], int) or done["GetListMovies"] < 1:
        sys.exit(f"unexpected: {surprises or done}")


if __name__ == "__main__":
    main()
