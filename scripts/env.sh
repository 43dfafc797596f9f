# Shared settings for the project's scripts; sourced, never run. Every value can be overridden
# from the environment.

HOGSTREAM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Tools installed once and kept between runs and clones (Apache Kafka's jars).
HOGSTREAM_PREFIX="${HOGSTREAM_PREFIX:-$HOME/.hogstream}"
# Project-local state: the Python virtualenv for chDB, service data, pid files and logs.
HOGSTREAM_VENV="${HOGSTREAM_VENV:-$HOGSTREAM_ROOT/.local/venv}"
HOGSTREAM_DATA="${HOGSTREAM_DATA:-$HOGSTREAM_ROOT/.local/data}"
HOGSTREAM_KAFKA_PORT="${HOGSTREAM_KAFKA_PORT:-9092}"
# The KRaft controller's listener of the local broker (broker and controller are one process).
HOGSTREAM_KAFKA_CONTROLLER_PORT="${HOGSTREAM_KAFKA_CONTROLLER_PORT:-9093}"
# The local broker's TLS + SASL listener (SCRAM-SHA-512 or PLAIN, user `hogstream`).
HOGSTREAM_KAFKA_TLS_PORT="${HOGSTREAM_KAFKA_TLS_PORT:-9094}"
HOGSTREAM_CLICKHOUSE_PORT="${HOGSTREAM_CLICKHOUSE_PORT:-8123}"
# The ClickHouse front's HTTPS port, where the user `hogstream` must give its password.
HOGSTREAM_CLICKHOUSE_HTTPS_PORT="${HOGSTREAM_CLICKHOUSE_HTTPS_PORT:-8443}"
HOGSTREAM_CAPTURE_PORT="${HOGSTREAM_CAPTURE_PORT:-8010}"
# The local object store (SeaweedFS): its S3 port, and the ports of its master, volume server
# and filer (each also uses its port + 10000 for gRPC).
HOGSTREAM_S3_PORT="${HOGSTREAM_S3_PORT:-8333}"
# The same S3 gateway over HTTPS, with the local CA's server certificate (scripts/tls.py).
HOGSTREAM_S3_HTTPS_PORT="${HOGSTREAM_S3_HTTPS_PORT:-8433}"
HOGSTREAM_S3_MASTER_PORT="${HOGSTREAM_S3_MASTER_PORT:-9333}"
HOGSTREAM_S3_VOLUME_PORT="${HOGSTREAM_S3_VOLUME_PORT:-9340}"
HOGSTREAM_S3_FILER_PORT="${HOGSTREAM_S3_FILER_PORT:-8888}"

# The pinned Apache Kafka version lives in one place, the pom that install.sh resolves.
KAFKA_POM="$HOGSTREAM_ROOT/scripts/kafka/pom.xml"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM")"
KAFKA_HOME="$HOGSTREAM_PREFIX/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME/libs"
# SeaweedFS, pinned to one snapshot of its Go module (Apache-2.0), built once into the prefix.
SEAWEEDFS_MODULE="github.com/seaweedfs/seaweedfs"
SEAWEEDFS_VERSION="v0.0.0-20261109003541-7506e5f91cd6"
SEAWEEDFS_HOME="$HOGSTREAM_PREFIX/seaweedfs-$SEAWEEDFS_VERSION"
RUN_DIR="$HOGSTREAM_DATA/run"
# Certificates and passwords of the local secured listeners (scripts/tls.py), never committed.
TLS_DIR="$HOGSTREAM_DATA/tls"
LOG_DIR="$HOGSTREAM_DATA/logs"

export HOGSTREAM_KAFKA_BROKERS="${HOGSTREAM_KAFKA_BROKERS:-127.0.0.1:$HOGSTREAM_KAFKA_PORT}"
export HOGSTREAM_CLICKHOUSE_URL="${HOGSTREAM_CLICKHOUSE_URL:-http://127.0.0.1:$HOGSTREAM_CLICKHOUSE_PORT}"

log() { printf '\033[1m[hogstream]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[hogstream] error:\033[0m %s\n' "$*" >&2; exit 1; }
