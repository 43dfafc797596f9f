//! Deterministic identifiers PostHog derives from team and distinct id.

use uuid::Uuid;

/// PostHog's namespace for person UUIDv5s.
pub const PERSON_NAMESPACE: Uuid = Uuid::from_u128(0x932979b4_65c3_4424_8467_0b66ec27bc22);

/// The person id PostHog gives a person created from `distinct_id` (and personless events).
pub fn person_uuid(team_id: i64, distinct_id: &str) -> Uuid {
    Uuid::new_v5(
        &PERSON_NAMESPACE,
        format!("{team_id}:{distinct_id}").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn person_uuid_is_v5_and_deterministic() {
        let a = person_uuid(1, "user-1");
        assert_eq!(a.get_version_num(), 5);
        assert_eq!(a, person_uuid(1, "user-1"));
        assert_ne!(a, person_uuid(2, "user-1"));
        assert_ne!(a, person_uuid(1, "user-2"));
    }
}
