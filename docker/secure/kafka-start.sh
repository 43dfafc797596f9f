#!/bin/sh
# Entry point of the secured example's broker (apache/kafka image, as its appuser): formats the
# storage once, with the SCRAM-SHA-512 user `hogstream` in its first metadata, then starts
# Kafka with the configuration made by setup.sh.
set -eu
conf=/tls/kafka/server.properties
/opt/kafka/bin/kafka-storage.sh format --standalone --ignore-formatted \
  --cluster-id "$CLUSTER_ID" --config "$conf" \
  --add-scram "SCRAM-SHA-512=[name=hogstream,password=$(cat /tls/kafka/kafka-password)]"
exec /opt/kafka/bin/kafka-server-start.sh "$conf"
