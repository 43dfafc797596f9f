//! The stored time of an event: capture's rule (PostHog's `parse_event_timestamp`).

use chrono::{DateTime, Utc};
use hogstream_capture::timestamp::compute_timestamp;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// The event time for a `timestamp`, `offset` and `sent_at` received at `now`.
fn computed(
    timestamp: Option<&str>,
    offset: Option<i64>,
    sent_at: Option<&str>,
    now: &str,
) -> DateTime<Utc> {
    compute_timestamp(timestamp, offset, sent_at.map(t), false, t(now))
}

const NOW: &str = "2023-01-01T12:00:00Z";

/// timestamp.rs `positive_skew_client_clock_ahead`, `negative_skew_client_clock_behind` and
/// `zero_skew_clocks_aligned`: the client's skew (`sent_at` − `now`) comes off the timestamp.
#[test]
fn clock_skew_is_corrected_with_sent_at() {
    let ts = Some("2023-01-01T11:00:00Z");
    assert_eq!(
        computed(ts, None, Some("2023-01-01T12:00:10Z"), NOW),
        t("2023-01-01T10:59:50Z")
    );
    assert_eq!(
        computed(ts, None, Some("2023-01-01T11:59:50Z"), NOW),
        t("2023-01-01T11:00:10Z")
    );
    assert_eq!(
        computed(ts, None, Some(NOW), NOW),
        t("2023-01-01T11:00:00Z")
    );
}

/// timestamps.test.ts "captures sent_at to adjusts timestamp" and "captures sent_at with
/// timezone info".
#[test]
fn skew_correction_with_posthogs_node_figures() {
    let now = "2021-10-29T01:44:00.000Z";
    let want = t("2021-10-29T01:34:00.000Z");
    let got = computed(
        Some("2021-10-30T03:02:00.000Z"),
        None,
        Some("2021-10-30T03:12:00.000Z"),
        now,
    );
    assert_eq!(got, want);
    let got = computed(
        Some("2021-10-30T07:02:00.000+04:00"),
        None,
        Some("2021-10-30T07:12:00.000+04:00"),
        now,
    );
    assert_eq!(got, want);
}

/// timestamp.rs `no_sent_at_no_correction` and timestamps.test.ts "captures timestamp with no
/// sent_at".
#[test]
fn without_sent_at_the_timestamp_is_kept() {
    assert_eq!(
        computed(Some("2023-01-01T11:00:00Z"), None, None, NOW),
        t("2023-01-01T11:00:00Z")
    );
}

/// timestamp.rs `ignore_sent_at_skips_correction` and timestamps.test.ts "Ignores sent_at if
/// $ignore_sent_at set": the timestamp is kept as sent.
#[test]
fn ignore_sent_at_skips_the_correction() {
    let got = compute_timestamp(
        Some("2023-01-01T11:00:00Z"),
        None,
        Some(t("2023-01-01T12:00:10Z")),
        true,
        t(NOW),
    );
    assert_eq!(got, t("2023-01-01T11:00:00Z"));
}

/// timestamps.test.ts "captures with time offset" and "captures with time offset and ignores
/// sent_at"; timestamp.rs `source_names_the_branch_that_computed_the_value` (offset beats the
/// timestamp and `sent_at`).
#[test]
fn offset_counts_back_from_now_over_everything_else() {
    let now = "2021-10-29T01:44:00.000Z";
    let want = t("2021-10-29T01:43:54.000Z");
    assert_eq!(computed(None, Some(6000), None, now), want);
    assert_eq!(
        computed(
            Some("2021-10-30T03:02:00.000Z"),
            Some(6000),
            Some("2021-10-30T03:12:00.000Z"),
            now
        ),
        want
    );
}

/// timestamps.test.ts "reports event_timestamp_in_future with sent_at", "… with
/// $ignore_sent_at" and "… with negative offset": more than 23 hours ahead of `now` is `now`;
/// exactly 23 hours is kept ("ignores and reports invalid sent_at").
#[test]
fn far_future_events_are_clamped_to_now() {
    let now = "2021-10-29T01:00:00.000Z";
    let got = computed(
        Some("2021-10-29T02:30:00.000Z"),
        None,
        Some("2021-10-28T01:00:00.000Z"),
        now,
    );
    assert_eq!(got, t(now));
    let got = computed(
        Some("2021-10-29T02:30:00.000Z"),
        None,
        None,
        "2021-09-29T01:00:00.000Z",
    );
    assert_eq!(got, t("2021-09-29T01:00:00.000Z"));
    assert_eq!(computed(None, Some(-82_860_000), None, now), t(now));
    let now = "2021-10-30T01:44:00.000Z";
    assert_eq!(
        computed(Some("2021-10-31T00:44:00.000Z"), None, None, now),
        t("2021-10-31T00:44:00.000Z")
    );
}

/// timestamp.rs `no_timestamp_falls_back_to_now`, `no_timestamp_with_sent_at_falls_back_to_now`
/// and `unparseable_timestamp_reports_the_now_fallback`; timestamps.test.ts "reports timestamp
/// parsing error and fallbacks to DateTime.utc".
#[test]
fn missing_or_unparseable_timestamps_are_now() {
    assert_eq!(computed(None, None, None, NOW), t(NOW));
    assert_eq!(
        computed(None, None, Some("2023-01-01T12:00:10Z"), NOW),
        t(NOW)
    );
    assert_eq!(computed(Some("not a date"), None, None, NOW), t(NOW));
    assert_eq!(computed(Some("notISO"), None, None, NOW), t(NOW));
}

/// timestamps.test.ts "timestamps adjusted way out of bounds are ignored": an offset that puts
/// the year out of range. PostHog's Rust capture (which hogstream follows) gives the epoch;
/// its older Node code gave `now` (docs/posthog-rules.md §1.8).
#[test]
fn out_of_range_results_give_the_epoch() {
    let got = computed(
        None,
        Some(600_000_000_000_000),
        None,
        "2021-10-28T01:10:00.000Z",
    );
    assert_eq!(got, DateTime::<Utc>::UNIX_EPOCH);
}
