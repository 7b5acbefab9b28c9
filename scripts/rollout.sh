#!/usr/bin/env bash
# Rolling upgrade of one service of the running compose stack (docs/operations.md):
#
#   scripts/rollout.sh cheese|movie|soccer|edge      (or: make rollout SERVICE=movie)
#
# `docker compose up --force-recreate` replaces every replica at once, stop-first (Compose
# 2.27-2.40 ignore deploy.update_config), so calls fail while no replica serves. This
# replaces a server's replicas one at a time, as docker-rollout does, with compose and the
# engine doing every step:
#
#   1. build the service's image (the new code; compose builds nothing for `up` when
#      the tag already exists);
#   2. `up --no-recreate --scale svc=N+1`: one new container from that image beside the N old;
#   3. wait until Docker says it is healthy AND the edge has it in rotation (Envoy's
#      /clusters lists its address as healthy: DNS refresh and a health check found it);
#   4. `docker stop` one old replica (SIGTERM: it says NOT_SERVING, drains, exits), remove it;
#   5. again until no old replica is left. The count the user chose is kept.
#
# A new replica that is not healthy within ROLLOUT_TIMEOUT seconds (or that exits or
# restarts first) is removed, the old replicas are left serving, and the script exits 1.
#
# The edge publishes the host ports, which one container only can hold: it is replaced
# stop-first, after Envoy has been told to drain (every HTTP/2 client gets a GOAWAY and
# reconnects, its calls retried; see docs/operations.md for what host clients see). If the
# new edge is not healthy in time, the previous image is put back under the tag and started.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: $0 cheese|movie|soccer|edge" >&2
  exit 2
}
(($# == 1)) || usage
service=$1
case $service in
  cheese | movie | soccer | edge) ;;
  *) usage ;;
esac

# Seconds a new replica has to become healthy: the servers' healthcheck start_period is 30 s.
timeout=${ROLLOUT_TIMEOUT:-90}
# The servers drain for SHUTDOWN_DRAIN then give calls SHUTDOWN_GRACE (10 s): as compose's
# stop_grace_period, a little more than that.
stop_grace=${ROLLOUT_STOP_GRACE:-15}
# Seconds Envoy's drain lasts (the edge's --drain-time-s, Dockerfile).
edge_drain=${ROLLOUT_EDGE_DRAIN:-2}
# ROLLOUT_NO_BUILD=1 rolls out the image already under the tag (built or pulled by hand).
no_build=${ROLLOUT_NO_BUILD:-}

# Each line starts with the seconds since boot (the clock of time.monotonic() in every
# container), so that a test can lay calls that failed beside the step that was under way.
say() { echo "rollout $service: [$(cut -d' ' -f1 /proc/uptime)] $*" >&2; }
die() {
  say "REFUSED: $*"
  exit 1
}

# Running containers of a compose service, by id.
running() { docker compose ps --quiet --status running "$1"; }

address_of() {
  docker inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$1" | awk '{print $1}'
}

# healthy | starting | unhealthy | restarting | exited ...: Docker's health, or the
# container's state when it is not running.
state_of() {
  docker inspect --format '{{if eq .State.Status "running"}}{{if .State.Health}}{{.State.Health.Status}}{{else}}healthy{{end}}{{else}}{{.State.Status}}{{end}} {{.RestartCount}}' "$1"
}

# Waits until container $1 is healthy; fails as soon as it is unhealthy, stopped or
# restarted (a server that refuses to start exits 1 and the restart policy starts it again).
wait_healthy() {
  local container=$1 deadline=$((SECONDS + timeout)) health restarts
  while true; do
    read -r health restarts < <(state_of "$container")
    case $health in
      healthy) return 0 ;;
      starting) ;;
      *) echo "$health"; return 1 ;;
    esac
    if ((restarts > 0)); then echo "restarted $restarts times"; return 1; fi
    if ((SECONDS >= deadline)); then echo "not healthy within ${timeout}s ($health)"; return 1; fi
    sleep 0.5
  done
}

# Envoy's view: every cluster of the service (soccer has soccer and soccer-jpeg) lists the
# address as healthy. Envoy finds it by DNS (refreshed every second) and health checks it
# every second, so this takes a second or two after Docker's healthcheck passed.
edge_has() {
  local address=$1 clusters
  clusters=$(docker compose exec -T edge curl -fsS http://127.0.0.1:9901/clusters) || return 1
  awk -F'::' -v service="$service" -v address="$address" '
    $1 == service || index($1, service "-") == 1 {
      seen[$1] = 1
      if (index($2, address ":") == 1 && $3 == "health_flags" && $4 == "healthy") ok[$1] = 1
    }
    END { for (c in seen) if (!(c in ok)) exit 1; exit (length(seen) ? 0 : 1) }
  ' <<<"$clusters"
}

wait_edge_has() {
  local address=$1 deadline=$((SECONDS + timeout))
  if [[ -z $(running edge) ]]; then
    say "no edge running: not waiting for it"
    return 0
  fi
  until edge_has "$address"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

build() {
  if [[ -z $no_build ]]; then
    say "building"
    docker compose build --quiet "$service"
  fi
}

roll_server() {
  local -a old
  mapfile -t old < <(running "$service")
  local count=${#old[@]}
  ((count > 0)) || die "no running replica: start the stack first (docker compose up -d --wait)"
  build
  say "replacing $count replica(s) one at a time"
  local replaced=0 previous container new address why
  for container in "${old[@]}"; do
    previous=$(running "$service" | sort)
    docker compose up --detach --no-deps --no-recreate --scale "$service=$((count + 1))" "$service" \
      2>&1 | sed 's/^/  /' >&2
    new=$(comm -13 <(echo "$previous") <(running "$service" | sort) | head -n 1)
    if [[ -z $new ]]; then
      # It may have exited at once: look among every container of the service.
      new=$(comm -13 <(echo "$previous") <(docker compose ps --all --quiet "$service" | sort) | head -n 1)
    fi
    [[ -n $new ]] || die "compose started no new replica; the old ones are untouched"
    say "new replica ${new:0:12} started; waiting until it is healthy"
    if ! why=$(wait_healthy "$new"); then
      echo "--- the new replica's last log lines:" >&2
      docker logs --tail 20 "$new" 2>&1 | sed 's/^/  /' >&2 || true
      docker rm --force "$new" >/dev/null
      die "new replica ${new:0:12} $why; removed it. $((count - replaced)) old replica(s) left serving, $replaced replaced"
    fi
    address=$(address_of "$new")
    if ! wait_edge_has "$address"; then
      docker rm --force "$new" >/dev/null
      die "the edge did not put new replica ${new:0:12} ($address) in rotation within ${timeout}s; removed it"
    fi
    say "new replica ${new:0:12} ($address) healthy and in the edge's rotation; draining old ${container:0:12}"
    # SIGTERM: NOT_SERVING at once (the edge and the clients' health watches stop sending
    # it calls), serving what still arrives for SHUTDOWN_DRAIN, then in-flight calls finish.
    docker stop --time "$stop_grace" "$container" >/dev/null
    docker rm "$container" >/dev/null
    replaced=$((replaced + 1))
  done
  say "done: $replaced replica(s) replaced, $(running "$service" | wc -l) running"
}

roll_edge() {
  local old
  old=$(running edge)
  [[ -n $old ]] || die "the edge is not running: start the stack first (docker compose up -d --wait)"
  local previous_image
  previous_image=$(docker inspect --format '{{.Image}}' "$old")
  build
  local image
  image=$(docker compose config --images edge)
  # Published ports are held by one container only, so the edge goes stop-first: Envoy
  # drains first (a GOAWAY to every HTTP/2 client, which finishes its calls and reconnects;
  # listeners close after the drain time), then compose replaces the container.
  say "draining the edge for ${edge_drain}s, then replacing it (stop-first: published ports)"
  docker compose exec -T edge curl -fsS -o /dev/null -X POST 'http://127.0.0.1:9901/drain_listeners?graceful' ||
    say "could not ask Envoy to drain; replacing it anyway"
  # Envoy's drain period, fixed by its --drain-time-s: nothing to poll.
  sleep "$edge_drain"
  if docker compose up --detach --no-deps --force-recreate --wait --wait-timeout "$timeout" edge 2>&1 |
    sed 's/^/  /' >&2; then
    say "done: edge replaced"
    return 0
  fi
  local broken
  broken=$(docker compose ps --all --quiet edge | head -n 1)
  echo "--- the new edge's last log lines:" >&2
  [[ -z $broken ]] || docker logs --tail 20 "$broken" 2>&1 | sed 's/^/  /' >&2 || true
  say "the new edge is not healthy within ${timeout}s: putting the previous image back as $image"
  docker tag "$previous_image" "$image"
  docker compose up --detach --no-deps --force-recreate --wait --wait-timeout "$timeout" edge >&2 ||
    die "the new edge never became healthy, and the previous one did not come back either"
  die "the new edge never became healthy; the previous image serves again"
}

if [[ $service == edge ]]; then roll_edge; else roll_server; fi
