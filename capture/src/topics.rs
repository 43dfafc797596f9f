//! Where each event goes: dropped, or which topic and whether it keeps its partition key.
//!
//! Precedence, as PostHog's `pipeline::resolve` without its Redis-managed custom topics:
//! drop list > DLQ > historical > overflow > main.

use std::collections::HashSet;

use crate::limiter::OverflowLimiter;

/// The topics capture writes to; names come from [`crate::config::TopicConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    Main,
    Overflow,
    Historical,
    Dlq,
}

impl Topic {
    pub fn label(self) -> &'static str {
        match self {
            Topic::Main => "main",
            Topic::Overflow => "overflow",
            Topic::Historical => "historical",
            Topic::Dlq => "dlq",
        }
    }
}

/// The outcome for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Silently dropped; the client still gets 200.
    Drop,
    Produce {
        topic: Topic,
        /// False means no key: round-robin partitioning, giving up per-key ordering to spread a
        /// hot key's load.
        keyed: bool,
        /// Why an event left the main topic, for metrics and the DLQ header.
        reason: Option<&'static str>,
    },
}

/// A set of `token` and `token:distinct_id` entries.
#[derive(Debug, Clone, Default)]
pub struct KeyList {
    entries: HashSet<String>,
}

impl KeyList {
    pub fn new<I, S>(entries: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            entries: entries
                .into_iter()
                .map(|e| e.as_ref().trim().to_owned())
                .filter(|e| !e.is_empty())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the whole token or this one `token:distinct_id` is listed.
    pub fn matches(&self, token: &str, distinct_id: &str) -> bool {
        !self.entries.is_empty()
            && (self.entries.contains(token)
                || self.entries.contains(&format!("{token}:{distinct_id}")))
    }
}

/// What routing needs to know about one event.
#[derive(Debug, Clone, Copy)]
pub struct RouteInput<'a> {
    pub token: &'a str,
    pub distinct_id: &'a str,
    /// The partition key (`token:distinct_id` or `token:ip`), which the limiter counts by.
    pub partition_key: &'a String,
    pub historical_migration: bool,
    pub person_processing_disabled: bool,
}

/// Routing rules built once from configuration.
#[derive(Debug, Default)]
pub struct TopicRules {
    pub drop: KeyList,
    pub dlq: KeyList,
    pub force_overflow: KeyList,
    pub disable_person_processing: KeyList,
    pub limiter: Option<OverflowLimiter>,
}

impl TopicRules {
    pub fn route(&self, input: RouteInput<'_>) -> Route {
        if self.drop.matches(input.token, input.distinct_id) {
            return Route::Drop;
        }
        if self.dlq.matches(input.token, input.distinct_id) {
            return Route::Produce {
                topic: Topic::Dlq,
                keyed: true,
                reason: Some("dlq_list"),
            };
        }
        if input.historical_migration {
            return Route::Produce {
                topic: Topic::Historical,
                keyed: true,
                reason: Some("historical_migration"),
            };
        }
        if self.force_overflow.matches(input.token, input.distinct_id) {
            return Route::Produce {
                topic: Topic::Overflow,
                keyed: false,
                reason: Some("forced"),
            };
        }
        // Only events that would go to main spend limiter cells, as in PostHog.
        if let Some(limiter) = &self.limiter
            && limiter.is_limited(input.partition_key)
        {
            return Route::Produce {
                topic: Topic::Overflow,
                // Keeping the key preserves per-person ordering for person processing; without
                // person processing there is nothing to order, so spread the load.
                keyed: !input.person_processing_disabled,
                reason: Some("rate_limited"),
            };
        }
        Route::Produce {
            topic: Topic::Main,
            keyed: true,
            reason: None,
        }
    }

    /// Whether the event's person processing is switched off by configuration.
    pub fn person_processing_disabled(&self, token: &str, distinct_id: &str) -> bool {
        self.disable_person_processing.matches(token, distinct_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(token: &'a str, distinct_id: &'a str, key: &'a String) -> RouteInput<'a> {
        RouteInput {
            token,
            distinct_id,
            partition_key: key,
            historical_migration: false,
            person_processing_disabled: false,
        }
    }

    fn main_keyed() -> Route {
        Route::Produce {
            topic: Topic::Main,
            keyed: true,
            reason: None,
        }
    }

    #[test]
    fn key_list_matches_token_or_token_and_distinct_id() {
        let list = KeyList::new(["phc_a", "phc_b:user1", "  ", " phc_c "]);
        assert!(list.matches("phc_a", "anyone"));
        assert!(list.matches("phc_b", "user1"));
        assert!(!list.matches("phc_b", "user2"));
        assert!(list.matches("phc_c", "x"));
        assert!(!list.matches("phc_z", "user1"));
        assert!(!KeyList::default().matches("phc_a", "x"));
        assert!(KeyList::new(Vec::<String>::new()).is_empty());
    }

    #[test]
    fn default_is_main_keyed() {
        let key = "phc:d".to_string();
        assert_eq!(
            TopicRules::default().route(input("phc", "d", &key)),
            main_keyed()
        );
    }

    #[test]
    fn precedence_drop_dlq_historical_overflow_main() {
        let key = "phc:d".to_string();
        let everything = KeyList::new(["phc"]);
        let mut router = TopicRules {
            drop: everything.clone(),
            dlq: everything.clone(),
            force_overflow: everything,
            ..TopicRules::default()
        };
        let mut hist = input("phc", "d", &key);
        hist.historical_migration = true;

        assert_eq!(router.route(hist), Route::Drop);
        router.drop = KeyList::default();
        assert!(matches!(
            router.route(hist),
            Route::Produce {
                topic: Topic::Dlq,
                keyed: true,
                ..
            }
        ));
        router.dlq = KeyList::default();
        assert!(matches!(
            router.route(hist),
            Route::Produce {
                topic: Topic::Historical,
                keyed: true,
                ..
            }
        ));
        assert!(matches!(
            router.route(input("phc", "d", &key)),
            Route::Produce {
                topic: Topic::Overflow,
                keyed: false,
                reason: Some("forced")
            }
        ));
        router.force_overflow = KeyList::default();
        assert_eq!(router.route(input("phc", "d", &key)), main_keyed());
    }

    #[test]
    fn forced_overflow_by_distinct_id_only_hits_that_person() {
        let router = TopicRules {
            force_overflow: KeyList::new(["phc:hot"]),
            ..TopicRules::default()
        };
        let hot = "phc:hot".to_string();
        let other = "phc:other".to_string();
        assert!(matches!(
            router.route(input("phc", "hot", &hot)),
            Route::Produce {
                topic: Topic::Overflow,
                keyed: false,
                ..
            }
        ));
        assert_eq!(router.route(input("phc", "other", &other)), main_keyed());
    }

    #[test]
    fn burst_limited_keys_overflow_but_keep_their_key() {
        let router = TopicRules {
            limiter: OverflowLimiter::new(1, 2),
            ..TopicRules::default()
        };
        let key = "phc:d".to_string();
        assert_eq!(router.route(input("phc", "d", &key)), main_keyed());
        assert_eq!(router.route(input("phc", "d", &key)), main_keyed());
        assert_eq!(
            router.route(input("phc", "d", &key)),
            Route::Produce {
                topic: Topic::Overflow,
                keyed: true,
                reason: Some("rate_limited")
            }
        );
        let mut personless = input("phc", "d", &key);
        personless.person_processing_disabled = true;
        assert!(matches!(
            router.route(personless),
            Route::Produce {
                topic: Topic::Overflow,
                keyed: false,
                ..
            }
        ));
        let other = "phc:e".to_string();
        assert_eq!(router.route(input("phc", "e", &other)), main_keyed());
    }

    #[test]
    fn historical_events_do_not_spend_limiter_cells() {
        let router = TopicRules {
            limiter: OverflowLimiter::new(1, 1),
            ..TopicRules::default()
        };
        let key = "phc:d".to_string();
        let mut hist = input("phc", "d", &key);
        hist.historical_migration = true;
        for _ in 0..5 {
            assert!(matches!(
                router.route(hist),
                Route::Produce {
                    topic: Topic::Historical,
                    ..
                }
            ));
        }
        assert_eq!(router.route(input("phc", "d", &key)), main_keyed());
    }

    #[test]
    fn person_processing_list() {
        let router = TopicRules {
            disable_person_processing: KeyList::new(["phc:bot"]),
            ..TopicRules::default()
        };
        assert!(router.person_processing_disabled("phc", "bot"));
        assert!(!router.person_processing_disabled("phc", "human"));
    }
}
