//! Tenant and credential identifiers: validated on the way in, so a store never builds a
//! query, a context or an audit record from an arbitrary string.

use std::fmt;

/// An id that does not parse, or a random id that could not be generated. Converts into
/// [`StoreError`](crate::StoreError) (`Invalid` or `Random`) with `?`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id breaks a rule.
    #[error("{what} {reason}")]
    Invalid {
        /// `tenant id` or `credential id`.
        what: &'static str,
        /// The rule broken.
        reason: &'static str,
    },
    /// The system random source failed.
    #[error("the system random source failed")]
    Random,
}

/// Longest tenant id.
pub const MAX_TENANT_ID_LEN: usize = 64;

/// A tenant (workspace) id: 1–64 characters of `a-z A-Z 0-9 _ - .`, starting with a letter
/// or digit.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(String);

impl TenantId {
    /// Parses a tenant id.
    ///
    /// # Errors
    /// [`IdError::Invalid`] naming the rule broken.
    pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        let reason = if id.is_empty() {
            Some("is empty")
        } else if id.len() > MAX_TENANT_ID_LEN {
            Some("is longer than 64 characters")
        } else if !id.chars().all(ok_char) {
            Some("may hold only letters, digits, '_', '-' and '.'")
        } else if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            Some("must start with a letter or digit")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(IdError::Invalid {
                what: "tenant id",
                reason,
            }),
            None => Ok(Self(id)),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for TenantId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Checked as [`TenantId::new`] checks: a stored or received id that breaks a rule is an error.
impl<'de> serde::Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0)
    }
}

const CRED_PREFIX: &str = "cred_";

/// A credential id: `cred_` and 32 lowercase hex digits (128 random bits).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CredentialId(String);

impl CredentialId {
    /// A new random id. A client sealing a credential itself generates its id first, since
    /// the id is bound into the ciphertext.
    ///
    /// # Errors
    /// [`IdError::Random`] if the system random source failed.
    pub fn generate() -> Result<Self, IdError> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(|_| IdError::Random)?;
        Ok(Self(format!("{CRED_PREFIX}{}", hex::encode(b))))
    }

    /// Parses an id.
    ///
    /// # Errors
    /// [`IdError::Invalid`] if it is not `cred_` and 32 lowercase hex digits.
    pub fn parse(id: &str) -> Result<Self, IdError> {
        let ok = id.strip_prefix(CRED_PREFIX).is_some_and(|h| {
            h.len() == 32
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(IdError::Invalid {
                what: "credential id",
                reason: "expected `cred_` and 32 lowercase hex digits",
            })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for CredentialId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tenant_ids() {
        assert!(TenantId::new("acme").is_ok());
        assert!(TenantId::new("a.b-c_9").is_ok());
        for bad in ["", "-x", "a b", "ü", &"x".repeat(65)] {
            assert!(TenantId::new(bad).is_err(), "{bad:?}");
            // Deserialising checks the same rules.
            let json = serde_json::to_string(bad).unwrap();
            assert!(serde_json::from_str::<TenantId>(&json).is_err(), "{bad:?}");
        }
        let t: TenantId = serde_json::from_str("\"a.b-c_9\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"a.b-c_9\"");
    }

    #[test]
    fn credential_ids() {
        let id = CredentialId::generate().unwrap();
        assert_eq!(CredentialId::parse(id.as_str()).unwrap(), id);
        for bad in [
            "",
            "cred_",
            "cred_ABCDEF00000000000000000000000000",
            "x_00000000000000000000000000000000",
        ] {
            assert!(CredentialId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
