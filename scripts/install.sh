#!/usr/bin/env bash
# Installs what hogstream needs for development, tests and the local pipeline, skipping whatever
# is already there: Debian build packages (and Java 17 with Maven when missing), Prometheus for
# the monitoring tests, Apache Kafka's broker from Maven Central, SeaweedFS (the S3-compatible
# object store) from the Go module proxy, chDB (ClickHouse's engine) in a virtualenv, and the
# npm/PyPI PostHog SDKs used by the integration tests.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

apt_packages=(cmake libcurl4-openssl-dev libclang-dev clang pkg-config libssl-dev zlib1g-dev curl)
# Prometheus and promtool: the monitoring tests run the alert rules and the dashboard's queries.
apt_packages+=(prometheus)
# Kafka 4.x brokers need Java 17 or newer; Maven resolves the broker's classpath.
java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1; }
if ! command -v java >/dev/null || [ "$(java_major)" -lt 17 ]; then apt_packages+=(openjdk-17-jre-headless); fi
command -v mvn >/dev/null || apt_packages+=(maven)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Apache Kafka: Maven resolves kafka_2.13 and its runtime dependencies into one libs/ folder.
# The install is complete only when the pom it came from is recorded beside it, so a changed pom
# (a new Kafka version) or an interrupted install resolves again.
MAVEN_DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
pom_sum="$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)"
if [ "$(cat "$KAFKA_HOME/pom.sha256" 2>/dev/null)" != "$pom_sum" ]; then
  log "installing Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_HOME (once; about 55 MB)"
  staging="$KAFKA_HOME.partial"
  rm -rf "$staging"
  mkdir -p "$staging"
  if ! out="$(mvn -B -q -f "$KAFKA_POM" "$MAVEN_DEPENDENCY_PLUGIN:copy-dependencies" -DincludeScope=runtime \
      -DoutputDirectory="$staging/libs" 2>&1)"; then
    rm -rf "$staging"
    printf '%s\n' "$out" | tail -n 15 >&2
    if printf '%s' "$out" | grep -qiE 'Could not (transfer|resolve)|Unknown ?host|UnknownHost|Connection (refused|timed out|reset)|Network is unreachable|No route to host|PKIX'; then
      die "Maven could not download Apache Kafka $KAFKA_VERSION: Maven Central (https://repo.maven.apache.org/maven2, or the mirror in ~/.m2/settings.xml) cannot be reached from this machine. Check the network or proxy, then run scripts/install.sh again."
    fi
    die "Maven failed to resolve Apache Kafka $KAFKA_VERSION from $KAFKA_POM (output above)"
  fi
  ls "$staging/libs"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null 2>&1 \
    || die "Maven finished but $staging/libs has no kafka_2.13-$KAFKA_VERSION.jar"
  rm -rf "$KAFKA_HOME"
  mv "$staging" "$KAFKA_HOME"
  echo "$pom_sum" >"$KAFKA_HOME/pom.sha256"
fi

# SeaweedFS, the local S3-compatible object store for state checkpoints: its `weed` command,
# built from the module's source as the Go module proxy serves it (its go.mod has replace
# directives, so `go install module@version` refuses it). Complete only once the binary is in
# place.
if [ ! -x "$SEAWEEDFS_HOME/weed" ]; then
  command -v go >/dev/null || die "Go (1.26.6 or newer) is needed to build SeaweedFS, the local object store: install it from https://go.dev/dl, then run scripts/install.sh again"
  log "building SeaweedFS's weed $SEAWEEDFS_VERSION into $SEAWEEDFS_HOME (once; about 5 minutes on 2 cores)"
  src="$(go mod download -json "$SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')" \
    || die "could not download $SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION from the Go module proxy ($(go env GOPROXY))"
  build="$(mktemp -d)"
  cp -r "$src"/. "$build"
  chmod -R u+w "$build"
  rm -rf "$SEAWEEDFS_HOME.partial"
  mkdir -p "$SEAWEEDFS_HOME.partial"
  if ! (cd "$build" && go build -trimpath -ldflags "-s -w" -o "$SEAWEEDFS_HOME.partial/weed" ./weed); then
    rm -rf "$build" "$SEAWEEDFS_HOME.partial"
    die "building SeaweedFS failed (output above)"
  fi
  rm -rf "$build" "$SEAWEEDFS_HOME"
  mv "$SEAWEEDFS_HOME.partial" "$SEAWEEDFS_HOME"
fi

# chDB for the ClickHouse front; cryptography makes the local TLS certificates (scripts/tls.py).
if ! "$HOGSTREAM_VENV/bin/python" -c 'import chdb, lz4, zstandard, clickhouse_cityhash, cryptography' 2>/dev/null; then
  log "creating the chDB virtualenv in $HOGSTREAM_VENV"
  python3 -m venv "$HOGSTREAM_VENV"
  "$HOGSTREAM_VENV/bin/pip" install --quiet --disable-pip-version-check \
    'chdb-core>=26.9' lz4 zstandard clickhouse-cityhash cryptography
fi
log "installed: Apache Kafka $KAFKA_VERSION (Java $(java_major)), chDB $("$HOGSTREAM_VENV/bin/python" -c 'import chdb; print(chdb.engine_version)'), SeaweedFS $SEAWEEDFS_VERSION"

# PostHog's SDKs (PyPI, npm) and Debian's Chromium for the capture integration tests.
"$HOGSTREAM_ROOT/scripts/install-sdks.sh"
