#!/bin/sh
# One-shot step of docker-compose.secure.yml, in a python image: makes the example's CA,
# certificates and passwords (scripts/tls.py, with the services' host names) and each
# service's share of them, once, into the `tls` volume. Every service reads only its own
# folder, owned by its own user: kafka/ (uid 1000, the apache/kafka image's appuser),
# clickhouse/ (uid 101), hogstream/ (uid 10001, docker/Dockerfile).
#
# An example: production brings its own CA and secrets (Docker or Kubernetes secrets, a vault).
set -eu

if [ -f /tls/hogstream/clickhouse-password ]; then
  echo "secure setup: already done"
  exit 0
fi
pip install --quiet --disable-pip-version-check --root-user-action=ignore 'cryptography>=42,<47'
python /setup/tls.py /tls/made kafka clickhouse
made=/tls/made
mkdir -p /tls/kafka /tls/clickhouse /tls/hogstream

# Kafka: the keystore, the CA, the SCRAM/PLAIN password and its configuration. Clients reach it
# only on SASL_SSL (9094); the plaintext listener binds to the container's loopback, for the
# broker itself and its healthcheck.
cp "$made/server.p12" "$made/ca.pem" "$made/kafka-password" /tls/kafka/
cat > /tls/kafka/server.properties <<PROPERTIES
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:9093
listeners=INTERNAL://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093,SASL_SSL://:9094
advertised.listeners=INTERNAL://127.0.0.1:9092,SASL_SSL://kafka:9094
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=/tls/kafka/server.p12
listener.name.sasl_ssl.ssl.keystore.password=$(cat "$made/keystore-password")
listener.name.sasl_ssl.ssl.key.password=$(cat "$made/keystore-password")
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs=/var/lib/kafka/data
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPERTIES

# ClickHouse: the certificate and key of its HTTPS port, and the user `hogstream` with the
# password's SHA-256 (the password itself stays out of its configuration).
cp "$made/server.pem" "$made/server.key" /tls/clickhouse/
sha=$(python -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1]).read().strip().encode()).hexdigest())' "$made/clickhouse-password")
cat > /tls/clickhouse/users.xml <<XML
<clickhouse>
  <users>
    <hogstream>
      <password_sha256_hex>$sha</password_sha256_hex>
      <networks><ip>::/0</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
      <access_management>1</access_management>
    </hogstream>
    <!-- The password-less default user answers the container's own healthcheck, nothing else. -->
    <default>
      <networks replace="replace"><ip>::1</ip><ip>127.0.0.1</ip></networks>
    </default>
  </users>
</clickhouse>
XML

# hogstream: the CA both services' certificates chain to, and the two passwords.
cp "$made/ca.pem" "$made/kafka-password" "$made/clickhouse-password" /tls/hogstream/

chown -R 1000:1000 /tls/kafka
chown -R 101:101 /tls/clickhouse
chown -R 10001:10001 /tls/hogstream
chmod 0700 /tls/kafka /tls/clickhouse /tls/hogstream
chmod 0600 /tls/kafka/* /tls/clickhouse/* /tls/hogstream/*
# The CA's key stays with root: nothing in the example signs anything later.
chmod -R go-rwx "$made"
echo "secure setup: certificates and passwords made"
