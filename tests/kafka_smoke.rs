//! The broker works the way hogstream relies on: partitioned topics, keyed produce with the
//! idempotent producer, consume by `assign()`, and group offsets kept across a broker restart.

mod common;

use std::{collections::HashMap, time::Duration};

use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, CommitMode, Consumer},
    producer::{FutureProducer, FutureRecord},
};

const PARTITIONS: i32 = 4;
const MESSAGES: usize = 200;

async fn create_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let res = admin
        .create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(res[0].is_ok(), "create topic: {:?}", res[0]);
}

fn consumer(brokers: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

/// Reads every message of `topic` from the beginning: (partition, offset, key, value).
fn read_all(c: &BaseConsumer, topic: &str, expect: usize) -> Vec<(i32, i64, String, String)> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while out.len() < expect && std::time::Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            out.push((
                m.partition(),
                m.offset(),
                String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                String::from_utf8(m.payload().unwrap().to_vec()).unwrap(),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn keyed_messages_partition_consume_and_offsets_survive_a_broker_restart() {
    let brokers = common::require_kafka();
    let topic = common::unique("smoke_kafka");
    create_topic(&brokers, &topic).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap();
    for i in 0..MESSAGES {
        let key = format!("key-{}", i % 10);
        let value = format!("value-{i}");
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .expect("delivery");
    }

    let group = common::unique("smoke_group");
    let c = consumer(&brokers, &group);
    let got = read_all(&c, &topic, MESSAGES);
    assert_eq!(got.len(), MESSAGES, "every produced message is consumed");
    let mut partition_of_key: HashMap<String, i32> = HashMap::new();
    let mut partitions_used = std::collections::HashSet::new();
    for (p, _, k, _) in &got {
        assert_eq!(
            *partition_of_key.entry(k.clone()).or_insert(*p),
            *p,
            "one key, one partition"
        );
        partitions_used.insert(*p);
    }
    assert!(
        partitions_used.len() > 1,
        "10 keys spread over several of {PARTITIONS} partitions"
    );
    let mut values: Vec<_> = got.iter().map(|(_, _, _, v)| v.clone()).collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), MESSAGES, "no message duplicated");

    // Commit the end of each partition, restart the broker, and read the commits back.
    let mut ends = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        let next = got
            .iter()
            .filter(|m| m.0 == p)
            .map(|m| m.1 + 1)
            .max()
            .unwrap_or(0);
        ends.add_partition_offset(&topic, p, Offset::Offset(next))
            .unwrap();
    }
    c.commit(&ends, CommitMode::Sync).unwrap();
    drop(c);

    common::services(&["restart", "kafka"]);

    let c = consumer(&brokers, &group);
    let mut query = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        query.add_partition(&topic, p);
    }
    // A restarted broker answers "not coordinator" until it has loaded `__consumer_offsets`;
    // clients wait that out, as the engine does.
    let committed = hogstream_engine::source::while_coordinator_starts("the test", || {
        c.committed_offsets(query.clone(), Duration::from_secs(30))
    })
    .expect("committed offsets after restart");
    for p in 0..PARTITIONS {
        assert_eq!(
            committed.find_partition(&topic, p).unwrap().offset(),
            ends.find_partition(&topic, p).unwrap().offset(),
            "partition {p} offset kept across the restart"
        );
    }
    let again = read_all(
        &consumer(&brokers, &common::unique("smoke_group2")),
        &topic,
        MESSAGES,
    );
    assert_eq!(again.len(), MESSAGES, "messages kept across the restart");
}
