//! Teams (PostHog projects) known to the engine, looked up by their public token.

use std::collections::HashMap;

use serde::Deserialize;
use xxhash_rust::xxh3::xxh3_64;

/// The route of a team's events, from its token: what decides its virtual shard, and so the
/// worker and process that own its person state.
pub fn team_route(token: &str) -> u64 {
    xxh3_64(token.as_bytes())
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Team {
    pub id: i64,
    /// The project API key SDKs send (`phc_...`).
    pub token: String,
    #[serde(default)]
    pub name: String,
    /// Every event of the team is processed as `$process_person_profile=false`.
    #[serde(default)]
    pub person_processing_opt_out: bool,
    /// `$ip` is removed from the team's events.
    #[serde(default)]
    pub anonymize_ips: bool,
    /// The team's group types, index = position (at most five). When set, indices never
    /// depend on arrival order and other types are ignored; when empty, types get indices at
    /// first sight.
    #[serde(default)]
    pub group_types: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Teams {
    by_token: HashMap<String, Team>,
    /// Team id → [`team_route`] of its token.
    routes: HashMap<i64, u64>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TeamsError {
    #[error("team token `{0}` is configured twice")]
    DuplicateToken(String),
    #[error("team id {0} is configured twice")]
    DuplicateId(i64),
    #[error("team {0} has an empty token")]
    EmptyToken(i64),
    #[error("team {0} declares {1} group types; PostHog allows at most 5, each once")]
    GroupTypes(i64, usize),
}

impl Teams {
    pub fn new(teams: Vec<Team>) -> Result<Self, TeamsError> {
        let mut by_token = HashMap::new();
        let mut routes = HashMap::new();
        for t in teams {
            if t.token.trim().is_empty() {
                return Err(TeamsError::EmptyToken(t.id));
            }
            if routes.insert(t.id, team_route(&t.token)).is_some() {
                return Err(TeamsError::DuplicateId(t.id));
            }
            let distinct: std::collections::HashSet<&String> = t.group_types.iter().collect();
            if t.group_types.len() > hogstream_state::persons::MAX_GROUP_TYPES
                || distinct.len() != t.group_types.len()
            {
                return Err(TeamsError::GroupTypes(t.id, t.group_types.len()));
            }
            if by_token.contains_key(&t.token) {
                return Err(TeamsError::DuplicateToken(t.token));
            }
            by_token.insert(t.token.clone(), t);
        }
        Ok(Self { by_token, routes })
    }

    pub fn by_token(&self, token: &str) -> Option<&Team> {
        self.by_token.get(token)
    }

    /// The [`team_route`] of team `id`'s token.
    pub fn route(&self, id: i64) -> Option<u64> {
        self.routes.get(&id).copied()
    }

    /// Group types of the teams that declare them.
    pub fn declared_group_types(&self) -> HashMap<i64, Vec<String>> {
        self.by_token
            .values()
            .filter(|t| !t.group_types.is_empty())
            .map(|t| (t.id, t.group_types.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused() {
        let t = |id, token: &str| Team {
            id,
            token: token.into(),
            ..Default::default()
        };
        assert_eq!(
            Teams::new(vec![t(1, "a"), t(1, "b")]).unwrap_err(),
            TeamsError::DuplicateId(1)
        );
        assert_eq!(
            Teams::new(vec![t(1, "a"), t(2, "a")]).unwrap_err(),
            TeamsError::DuplicateToken("a".into())
        );
        assert_eq!(
            Teams::new(vec![t(1, " ")]).unwrap_err(),
            TeamsError::EmptyToken(1)
        );
        let teams = Teams::new(vec![t(1, "a"), t(2, "b")]).unwrap();
        assert_eq!(teams.by_token("b").unwrap().id, 2);
        assert!(teams.by_token("c").is_none());
        assert_eq!(teams.route(2), Some(team_route("b")));
        assert_eq!(teams.route(3), None);
    }
}
