//! Says, in every plain `cargo test`, that the tests against the real broker and ClickHouse were
//! left out, and how to run them: they are behind the `services` feature (Cargo.toml), which
//! scripts/test.sh and CI always turn on.

#[cfg(not(feature = "services"))]
#[test]
#[ignore = "the tests against Kafka and ClickHouse are off: run scripts/test.sh, or cargo test --features services,example-plugins with scripts/services.sh start"]
fn tests_against_the_services_are_off() {}

#[cfg(feature = "services")]
#[test]
fn tests_against_the_services_are_on() {
    // The feature is what makes the service tests fail loudly when a service is missing, so it
    // must not be on without them.
    assert!(
        std::net::TcpStream::connect(
            std::env::var("HOGSTREAM_KAFKA_BROKERS")
                .unwrap_or_else(|_| "127.0.0.1:9092".into())
                .split(',')
                .next()
                .unwrap_or_default()
        )
        .is_ok(),
        "the `services` feature is on but no Kafka broker answers: scripts/services.sh start"
    );
}
