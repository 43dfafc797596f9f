//! The engine resumes after the broker restarts under load, losing and duplicating nothing.
//!
//! Its own test binary, so no other test's producer is connected across the restart: tansu
//! 0.6.0's storage task panics when an idempotent producer keeps its producer id across a broker
//! restart (`idempotent_message_check`, "more or less than one row"), after which the broker
//! fails every request. Real Kafka handles that case; here capture restarts with the broker,
//! and the engine, whose consumer is what this test is about, stays up throughout.

mod common;

use common::pipeline::{Pipeline, assert_exactly_once, send_events};

#[test]
fn broker_restart_mid_load_resumes() {
    const N: usize = 3000;
    let p = Pipeline::new(2, 4);
    p.start_capture();
    p.start_engine();
    send_events(&p, N, 20, |round| {
        if round == 1 {
            p.stop_capture();
            common::services(&["restart", "kafka"]);
            p.start_capture();
        }
    });
    assert_exactly_once(&p, N);
    assert!(
        p.engine_log().contains("worker assigned"),
        "the engine ran throughout"
    );
    assert!(p.stop_engine(), "graceful stop after the restart");
}
