#!/usr/bin/env bash
# Printed by `make up`: how to call each service, with grpcurl and with the client.
set -euo pipefail
cheese=${CHEESE_PORT:-50051} movie=${MOVIE_PORT:-50052} soccer=${SOCCER_PORT:-50053}
https=${HTTPS_PORT:-8443}
tls="-cacert certs/ca.crt -cert certs/client.crt -key certs/client.key"
cat <<TXT

The stack is up and healthy (make ps, make logs, make down).

From this machine, with grpcurl (make grpcurl puts a pinned one in .tools/bin):
  .tools/bin/grpcurl $tls localhost:$cheese list
  .tools/bin/grpcurl $tls -d '{"type": "BRIE"}' localhost:$cheese cheesefarm.CheeseService/Order
  .tools/bin/grpcurl $tls -d '{"id": "a8034f44-aee4-44cf-b32c-74cf452aaaae"}' localhost:$movie Movie/GetMovieByID
  .tools/bin/grpcurl $tls localhost:$movie Movie/GetListMovies
  .tools/bin/grpcurl $tls -d '{"id": "demo", "encoding": "JPEG", "max_frames": 2}' localhost:$soccer stream.Soccer/Watch
  .tools/bin/grpcurl $tls -d '{"service": "stream.Soccer"}' localhost:$soccer grpc.health.v1.Health/Check

JSON over HTTPS, with curl (same client certificate):
  curl --cacert certs/ca.crt --cert certs/client.crt --key certs/client.key -H 'content-type: application/json' -d '{"id": "a8034f44-aee4-44cf-b32c-74cf452aaaae"}' https://localhost:$https/Movie/GetMovieByID

In a browser (with the client certificate imported; README, "Call it"):
  https://localhost:$https/            the match viewer (gRPC-Web)
  docker compose --profile tools up -d grpcui, then http://127.0.0.1:${GRPCUI_PORT:-8080}/

On the compose network, by service name:
  docker compose run --rm grpcurl -cacert /certs/ca.crt -cert /certs/client.crt -key /certs/client.key movie:50052 list
  docker compose run --rm client movie list
  docker compose run --rm client smoke

With the client on this machine (make venv):
  .venv/bin/python -m client cheese order brie
  .venv/bin/python -m client soccer watch demo --encoding jpeg --save match.mp4
TXT
