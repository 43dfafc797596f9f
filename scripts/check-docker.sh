#!/usr/bin/env bash
# Validates the container files without a Docker engine:
#   1. installs Debian's docker-compose (1.29) when it is missing (apt-get; root or sudo);
#   2. `docker-compose config` on docker/docker-compose.yml, docker-compose.scaled.yml and
#      docker-compose.secure.yml, and that all run the Apache Kafka version the local scripts install;
#   3. `hogstream config check` on docker/hogstream.docker.toml, alone and with the environment
#      overrides the compose files set, when a hogstream binary is built (HOGSTREAM_BIN, default
#      target/debug/hogstream; skipped with a note otherwise, never built here);
#   4. hadolint on docker/Dockerfile when hadolint is on PATH (optional, never installed here).
# Safe to run again and again; exits non-zero on the first failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[check-docker] %s\n' "$*" >&2; }
die() { printf '[check-docker] error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root or sudo to run: $*"
  fi
}

# 1. docker-compose
if ! command -v docker-compose >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || die "docker-compose is missing and apt-get is not available"
  log "installing docker-compose (Debian package)"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y docker-compose >/dev/null; then
    log "package index stale or missing: apt-get update, then retry"
    as_root apt-get update >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y docker-compose >/dev/null
  fi
fi
log "$(docker-compose version --short 2>/dev/null || docker-compose version | head -n1)"

# 2. compose files
for file in docker/docker-compose.yml docker/docker-compose.scaled.yml docker/docker-compose.secure.yml; do
  [ -f "$file" ] || die "$file is missing"
  if ! out="$(docker-compose -f "$file" config 2>&1 >/dev/null)"; then
    printf '%s\n' "$out" >&2
    die "docker-compose config failed for $file"
  fi
  # Warnings (e.g. unset variables) are printed on stderr even when the file is valid.
  [ -z "$out" ] || printf '%s\n' "$out" >&2
  services="$(docker-compose -f "$file" config --services | tr '\n' ' ')"
  log "ok: $file (services: ${services% })"
done

# 2b. one Kafka version: the compose files run the broker the local scripts install
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml)"
for file in docker/docker-compose.yml docker/docker-compose.scaled.yml docker/docker-compose.secure.yml; do
  image="$(sed -n 's/^ *image: *\(apache\/kafka:.*\)$/\1/p' "$file")"
  [ "$image" = "apache/kafka:$kafka_version" ] \
    || die "$file runs '$image', the local broker is Apache Kafka $kafka_version (scripts/kafka/pom.xml): keep them equal"
done
log "ok: the compose files and the local scripts run Apache Kafka $kafka_version"

# 3. the mounted configuration, as the binary sees it
config=docker/hogstream.docker.toml
[ -f "$config" ] || die "$config is missing"
bin="${HOGSTREAM_BIN:-$ROOT/target/debug/hogstream}"
if [ -x "$bin" ]; then
  check() { # label, env assignments...
    local label=$1 out; shift
    # stdout is the whole configuration, password included: keep it out of logs.
    if ! out="$(env "$@" "$bin" --config "$config" config check 2>&1 >/dev/null)"; then
      printf '%s\n' "$out" >&2
      die "hogstream config check failed for $config ($label)"
    fi
    log "ok: $config ($label)"
  }
  # Clear overrides inherited from the caller (scripts/env.sh exports some) so the file is
  # checked on its own first.
  unset_env=(-u HOGSTREAM_KAFKA_BROKERS -u HOGSTREAM_CLICKHOUSE_URL -u HOGSTREAM_CLICKHOUSE_DATABASE
             -u HOGSTREAM_CAPTURE_ADDRESS -u HOGSTREAM_ENGINE_WORKERS -u HOGSTREAM_DATA_DIR)
  check "file alone" "${unset_env[@]}"
  check "with the compose overrides" "${unset_env[@]}" \
    HOGSTREAM_KAFKA_BROKERS=kafka:9092 HOGSTREAM_CLICKHOUSE_URL=http://clickhouse:8123 \
    HOGSTREAM_DATA_DIR=/var/lib/hogstream HOGSTREAM_CAPTURE_ADDRESS=0.0.0.0:8010 \
    HOGSTREAM_ENGINE_WORKERS=2
  # The secured example's configuration, with its /tls files made here by the same script
  # the compose file runs (scripts/tls.py).
  python="${HOGSTREAM_VENV:-$ROOT/.local/venv}/bin/python"
  if "$python" -c 'import cryptography' 2>/dev/null; then
    tls="$(mktemp -d)"
    trap 'rm -rf "$tls"' EXIT
    "$python" scripts/tls.py "$tls/hogstream" kafka clickhouse
    sed "s|/tls/hogstream/|$tls/hogstream/|g" docker/secure/hogstream.secure.toml >"$tls/secure.toml"
    if ! out="$(env "${unset_env[@]}" "$bin" --config "$tls/secure.toml" config check 2>&1 >/dev/null)"; then
      printf '%s\n' "$out" >&2
      die "hogstream config check failed for docker/secure/hogstream.secure.toml"
    fi
    log "ok: docker/secure/hogstream.secure.toml (with certificates made by scripts/tls.py)"
  else
    log "skipped: docker/secure/hogstream.secure.toml (no Python with cryptography: run scripts/install.sh)"
  fi
else
  log "skipped: hogstream config check ($bin is not built; run 'cargo build --bin hogstream')"
fi

# 4. Dockerfile lint, only when hadolint is already installed
if command -v hadolint >/dev/null 2>&1; then
  hadolint docker/Dockerfile || die "hadolint found problems in docker/Dockerfile"
  log "ok: docker/Dockerfile (hadolint)"
fi

log "all checks passed"
