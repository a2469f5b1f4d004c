//! Small validated value types shared by every crate.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Milliseconds since the Unix epoch. The core never reads the clock; callers pass it in.
pub type Millis = i64;

/// A release version. Always semantic versioning (`X.Y.Z[-pre][+build]`), as the standards require.
pub type Version = semver::Version;

/// Identifier of a deployment, assigned by the store in creation order.
pub type DeploymentId = i64;

/// A unit enum from the name it has on the wire (its serde name), or an
/// error naming what it is and the names it may have.
pub fn parse_name<T: serde::de::DeserializeOwned>(
    what: &str,
    s: &str,
    names: &[&str],
) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
        format!(
            "unknown {what} {s:?}; expected one of: {}",
            names.join(", ")
        )
    })
}

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name {0:?} is longer than 63 characters")]
    TooLong(String),
    #[error("name {0:?} may contain only lowercase letters, digits and '-', and must start with a letter")]
    BadCharacters(String),
}

/// The name of an environment (`development`, `production`, …).
///
/// Restricted to a DNS-label-like alphabet because it becomes part of paths,
/// process labels and URLs.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct EnvName(String);

impl EnvName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EnvName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > 63 {
            return Err(NameError::TooLong(s));
        }
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        if !first_ok
            || !s
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(NameError::BadCharacters(s));
        }
        Ok(EnvName(s))
    }
}

impl FromStr for EnvName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        EnvName::try_from(s.to_owned())
    }
}

impl From<EnvName> for String {
    fn from(e: EnvName) -> String {
        e.0
    }
}

impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SHA-256 digest, lowercase hex. Artifacts are addressed by it.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn as_hex(&self) -> &str {
        &self.0
    }
    /// The first 12 hex digits, for display.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.len() == 64
            && s.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        {
            Ok(Digest(s))
        } else {
            Err(format!(
                "{s:?} is not a lowercase hex SHA-256 digest (64 characters)"
            ))
        }
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One running instance of a release, as the engine sees it: an id the
/// target can find it by, the port it serves on, and on a fleet the host
/// it runs on (ids are unique across hosts: the host's name leads them).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct InstanceRef {
    pub id: String,
    pub port: u16,
    /// The fleet host; none for an instance beside the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl InstanceRef {
    /// An instance on the controller's own machine.
    pub fn local(id: impl Into<String>, port: u16) -> InstanceRef {
        InstanceRef {
            id: id.into(),
            port,
            host: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_validated() {
        assert!("production".parse::<EnvName>().is_ok());
        assert!("eu-west-2".parse::<EnvName>().is_ok());
        assert_eq!("".parse::<EnvName>(), Err(NameError::Empty));
        assert!(matches!(
            "Prod".parse::<EnvName>(),
            Err(NameError::BadCharacters(_))
        ));
        assert!(matches!(
            "2prod".parse::<EnvName>(),
            Err(NameError::BadCharacters(_))
        ));
        assert!(matches!(
            "../etc".parse::<EnvName>(),
            Err(NameError::BadCharacters(_))
        ));
    }

    #[test]
    fn digests_are_validated() {
        let ok = "a".repeat(64);
        assert!(Digest::try_from(ok).is_ok());
        assert!(Digest::try_from("A".repeat(64)).is_err());
        assert!(Digest::try_from("a".repeat(63)).is_err());
    }
}
