//! Event time: date parsing and PostHog's clock-skew formula (`parse_event_timestamp`).

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeDelta, Utc};

/// Events claiming to be further in the future than this are stamped `now`.
pub const MAX_FUTURE: TimeDelta = TimeDelta::hours(23);

/// Parses the date formats SDKs send: RFC 3339, ISO 8601 with `+HH`/`+HHMM` offsets or a space
/// separator, naive date-times (UTC), date-only (midnight UTC), RFC 2822 and numeric epochs.
///
/// Numeric epochs are a hogstream choice, since PostHog does not pin their unit: absolute values
/// of 1e11 and above are milliseconds (from 1973 on), smaller ones are seconds.
pub fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let s = text.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.to_utc());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.to_utc());
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    if let Ok(t) = DateTime::parse_from_rfc2822(s) {
        return Some(t.to_utc());
    }
    parse_epoch(s)
}

fn parse_epoch(s: &str) -> Option<DateTime<Utc>> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let value: f64 = s.parse().ok()?;
    let millis = if value.abs() >= 1e11 {
        value
    } else {
        value * 1000.0
    };
    if !millis.is_finite() || millis.abs() > i64::MAX as f64 {
        return None;
    }
    DateTime::from_timestamp_millis(millis as i64)
}

/// Years RFC 3339 can write. A `sent_at` outside them is ignored: the Kafka message carries it as
/// RFC 3339 text, and PostHog's own parser (the `time` crate) cannot represent it either.
const RFC3339_YEARS: std::ops::RangeInclusive<i32> = 0..=9999;

/// A batch body's `sent_at`: any date [`parse_date`] reads, within RFC 3339's years; anything
/// else is ignored, as an unparseable `sent_at` is in PostHog.
pub fn parse_sent_at(text: &str) -> Option<DateTime<Utc>> {
    parse_date(text).filter(|t| RFC3339_YEARS.contains(&t.year()))
}

/// The `_` query parameter posthog-js sends: `sent_at` in milliseconds.
///
/// Newest PostHog reads it as milliseconds only and ignores values that land in 2020 or before,
/// which is what an SDK sending seconds produces (legacy Python guessed the unit instead), or
/// after year 9999.
pub fn sent_at_from_query(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    let millis = match raw.parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => {
            let f: f64 = raw.parse().ok()?;
            if !f.is_finite() || f.abs() > i64::MAX as f64 {
                return None;
            }
            f as i64
        }
    };
    DateTime::from_timestamp_millis(millis)
        .filter(|t| t.year() > 2020 && RFC3339_YEARS.contains(&t.year()))
}

/// Computes the stored timestamp of an event.
///
/// - A parsed `timestamp` is shifted by the client's clock skew `sent_at − now`, i.e.
///   `now + (timestamp − sent_at)`, unless there is no `sent_at` or `$ignore_sent_at` is true.
/// - `offset` (ms before now) overrides everything above (newest PostHog; Node ≤2023 applied it
///   only without a `timestamp`).
/// - A missing or unparseable timestamp is `now`.
/// - More than 23 h in the future is clamped to `now`; a year outside 0..=9999, or arithmetic
///   overflow, gives the epoch (the Rust capture's choice; Node used `now`).
pub fn compute_timestamp(
    timestamp: Option<&str>,
    offset: Option<i64>,
    sent_at: Option<DateTime<Utc>>,
    ignore_sent_at: bool,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let mut ts = match timestamp.and_then(parse_date) {
        Some(t) => match sent_at {
            Some(sent) if !ignore_sent_at => t.checked_sub_signed(sent.signed_duration_since(now)),
            _ => Some(t),
        },
        None => Some(now),
    };
    if let Some(offset) = offset {
        ts = TimeDelta::try_milliseconds(offset).and_then(|d| now.checked_sub_signed(d));
    }
    let Some(ts) = ts else {
        return DateTime::<Utc>::UNIX_EPOCH;
    };
    let ts = match now.checked_add_signed(MAX_FUTURE) {
        Some(limit) if ts > limit => now,
        _ => ts,
    };
    if !(0..=9999).contains(&ts.year()) {
        return DateTime::<Utc>::UNIX_EPOCH;
    }
    ts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    const NOW: &str = "2026-03-01T12:00:00Z";

    #[test]
    fn parses_rfc3339_and_offsets() {
        assert_eq!(
            parse_date("2026-03-01T10:00:00Z"),
            Some(t("2026-03-01T10:00:00Z"))
        );
        assert_eq!(
            parse_date("2026-03-01T10:00:00.123+02:00"),
            Some(t("2026-03-01T08:00:00.123Z"))
        );
        assert_eq!(
            parse_date("2026-03-01T10:00:00+02"),
            Some(t("2026-03-01T08:00:00Z"))
        );
        assert_eq!(
            parse_date("2026-03-01T10:00:00.5-0130"),
            Some(t("2026-03-01T11:30:00.5Z"))
        );
        assert_eq!(
            parse_date("2026-03-01 10:00:00+00:00"),
            Some(t("2026-03-01T10:00:00Z"))
        );
    }

    #[test]
    fn parses_naive_date_only_rfc2822_and_epochs() {
        assert_eq!(
            parse_date("2026-03-01T10:00:00"),
            Some(t("2026-03-01T10:00:00Z"))
        );
        assert_eq!(
            parse_date("2026-03-01 10:00:00.250"),
            Some(t("2026-03-01T10:00:00.25Z"))
        );
        assert_eq!(parse_date("2026-03-01"), Some(t("2026-03-01T00:00:00Z")));
        assert_eq!(
            parse_date("Sun, 01 Mar 2026 10:00:00 +0000"),
            Some(t("2026-03-01T10:00:00Z"))
        );
        assert_eq!(parse_date("1772359200"), Some(t("2026-03-01T10:00:00Z")));
        assert_eq!(parse_date("1772359200000"), Some(t("2026-03-01T10:00:00Z")));
        assert_eq!(
            parse_date("1772359200.5"),
            Some(t("2026-03-01T10:00:00.5Z"))
        );
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "  ",
            "yesterday",
            "2026-13-01",
            "NaN",
            "inf",
            "1e5",
            "--1",
            "2026-03-01T25:00:00",
        ] {
            assert_eq!(parse_date(s), None, "{s}");
        }
    }

    #[test]
    fn missing_or_unparseable_timestamp_is_now() {
        let now = t(NOW);
        assert_eq!(compute_timestamp(None, None, None, false, now), now);
        assert_eq!(
            compute_timestamp(Some("garbage"), None, Some(now), false, now),
            now
        );
    }

    #[test]
    fn timestamp_without_sent_at_is_kept() {
        let now = t(NOW);
        let got = compute_timestamp(Some("2026-03-01T11:00:00Z"), None, None, false, now);
        assert_eq!(got, t("2026-03-01T11:00:00Z"));
    }

    #[test]
    fn clock_skew_is_corrected_with_sent_at() {
        // Client clock is 1 h behind: it sent at 11:00 its time, an event from 10:59:50 its time.
        let now = t(NOW);
        let sent_at = t("2026-03-01T11:00:00Z");
        let got = compute_timestamp(
            Some("2026-03-01T10:59:50Z"),
            None,
            Some(sent_at),
            false,
            now,
        );
        assert_eq!(got, t("2026-03-01T11:59:50Z"));
    }

    #[test]
    fn ignore_sent_at_skips_the_correction() {
        let now = t(NOW);
        let sent_at = t("2026-03-01T11:00:00Z");
        let got = compute_timestamp(Some("2026-03-01T10:59:50Z"), None, Some(sent_at), true, now);
        assert_eq!(got, t("2026-03-01T10:59:50Z"));
    }

    #[test]
    fn offset_overrides_timestamp_and_skew() {
        let now = t(NOW);
        let sent_at = t("2026-03-01T11:00:00Z");
        let got = compute_timestamp(
            Some("2020-01-01T00:00:00Z"),
            Some(1500),
            Some(sent_at),
            false,
            now,
        );
        assert_eq!(got, t("2026-03-01T11:59:58.5Z"));
        assert_eq!(compute_timestamp(None, Some(0), None, false, now), now);
    }

    #[test]
    fn far_future_is_clamped_to_now() {
        let now = t(NOW);
        let near = compute_timestamp(Some("2026-03-02T10:59:59Z"), None, None, false, now);
        assert_eq!(near, t("2026-03-02T10:59:59Z"));
        let far = compute_timestamp(Some("2026-03-02T11:00:01Z"), None, None, false, now);
        assert_eq!(far, now);
        // Skew correction can push an event into the future too.
        let sent_at = t("2026-02-28T12:00:00Z");
        let skewed = compute_timestamp(
            Some("2026-03-01T12:00:00Z"),
            None,
            Some(sent_at),
            false,
            now,
        );
        assert_eq!(skewed, now);
        // Negative offset means "in the future".
        assert_eq!(
            compute_timestamp(None, Some(-24 * 3600 * 1000), None, false, now),
            now
        );
    }

    #[test]
    fn invalid_years_and_overflow_give_epoch() {
        let now = t(NOW);
        let hundred_thousand_years_ms = 100_000i64 * 365 * 24 * 3600 * 1000;
        let got = compute_timestamp(None, Some(hundred_thousand_years_ms), None, false, now);
        assert_eq!(got, DateTime::<Utc>::UNIX_EPOCH);
        assert_eq!(
            compute_timestamp(None, Some(i64::MAX), None, false, now),
            DateTime::<Utc>::UNIX_EPOCH
        );
        assert_eq!(
            compute_timestamp(None, Some(i64::MIN), None, false, now),
            DateTime::<Utc>::UNIX_EPOCH
        );
        let far_sent_at = t("9999-12-31T00:00:00Z");
        let got = compute_timestamp(
            Some("0001-01-01T00:00:00Z"),
            None,
            Some(far_sent_at),
            false,
            now,
        );
        assert_eq!(got, DateTime::<Utc>::UNIX_EPOCH);
    }

    #[test]
    fn sent_at_query_param_is_milliseconds_after_2020() {
        assert_eq!(sent_at_from_query("1772366400000"), Some(t(NOW)));
        assert_eq!(sent_at_from_query("1772366400000.0"), Some(t(NOW)));
        // Seconds decode to 1970 and are ignored, as is 2020 itself.
        assert_eq!(sent_at_from_query("1772366400"), None);
        assert_eq!(sent_at_from_query("1600000000000"), None);
        assert_eq!(sent_at_from_query("soon"), None);
        assert_eq!(sent_at_from_query("1e400"), None);
    }

    /// Regression (cargo fuzz, `decode_payload`): a `sent_at` beyond year 9999, or before year
    /// 0, was kept and written to Kafka as `+255479-…`/`-0013-…`, which is not RFC 3339.
    #[test]
    fn sent_at_outside_rfc3339_years_is_ignored() {
        assert_eq!(sent_at_from_query("8000000000000000"), None);
        assert_eq!(
            sent_at_from_query("253402300799999"),
            Some(t("9999-12-31T23:59:59.999Z"))
        );
        assert_eq!(parse_sent_at("-013-06-01T11:00:00Z"), None);
        assert_eq!(parse_sent_at("8000000000000000"), None);
        assert_eq!(parse_sent_at("+10000-01-01T00:00:00Z"), None);
        assert_eq!(
            parse_sent_at("0000-01-01T00:00:00Z"),
            Some(t("0000-01-01T00:00:00Z"))
        );
        assert_eq!(parse_sent_at("2026-03-01T12:00:00Z"), Some(t(NOW)));
        assert_eq!(parse_sent_at("soon"), None);
    }
}
