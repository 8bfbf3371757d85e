//! Identities and roles for aurum's servers (HTTP, Arrow Flight, the Open
//! Inference Protocol over gRPC), alike on each.
//!
//! A token names an identity with one role: `read` (predictions, online
//! features, inference, Flight reads, drift pages), `write` (pushes and
//! feedback, Flight `DoPut`) or `admin` (registry writes, materialize,
//! reload); each role includes the ones before it. Tokens are kept hashed
//! (SHA-256) in a TOML file, which `aurum token new` appends to:
//!
//! ```toml
//! [[token]]
//! name = "ci"
//! role = "write"
//! sha256 = "5e88…"
//! ```
//!
//! A request carries its token as `Authorization: Bearer <token>`, or as the
//! password of `Authorization: Basic` (what the MLflow client and
//! pyarrow.flight's basic-token handshake send). With no token configured,
//! nothing is checked: the zero-configuration default on loopback.
//!
//! This crate knows nothing of HTTP servers, Flight or the registry; it only
//! answers who a credential is.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use base64::Engine;
use sha2::{Digest, Sha256};

/// What went wrong reading tokens.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The token file could not be read or written.
    #[error("token file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The token file is not valid.
    #[error("token file {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong (never a token).
        message: String,
    },
}

/// A role; each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: predictions, online features, inference, Flight reads, drift.
    Read,
    /// Reads and writes of data: pushes, feedback, Flight `DoPut`.
    Write,
    /// Everything: registry writes, materialize, reload.
    Admin,
}

impl Role {
    /// The role's name as files and messages write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}: use read, write or admin")),
        }
    }
}

/// Who a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's name (recorded as who moved an alias, say).
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// Why a caller may not do what it asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credential, or one no token matches (HTTP 401, gRPC
    /// `UNAUTHENTICATED`).
    Unauthenticated(String),
    /// A known identity without the role (HTTP 403, gRPC
    /// `PERMISSION_DENIED`).
    Forbidden(String),
}

impl Denied {
    /// The reason, naming what was missing (never the token).
    pub fn message(&self) -> &str {
        match self {
            Denied::Unauthenticated(m) | Denied::Forbidden(m) => m,
        }
    }
}

/// The tokens a server accepts, by the SHA-256 of each.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Arc<Identity>>,
    /// Tokens already matched, so a caller's every request does not hash
    /// its token again (SHA-256 is most of the check's cost); bounded.
    verified: Arc<RwLock<Verified>>,
}

/// Matched tokens and who they are.
type Verified = HashMap<Box<str>, Arc<Identity>, foldhash::fast::RandomState>;

/// How many matched tokens [`Tokens`] remembers before it starts over.
const VERIFIED_CAPACITY: usize = 1024;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: Role,
    sha256: String,
}

impl Tokens {
    /// No tokens: nothing is checked.
    pub fn none() -> Tokens {
        Tokens::default()
    }

    /// Whether no token is configured (every call is let through).
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The tokens of a TOML file of `[[token]]` entries (`name`, `role`,
    /// `sha256` of the token).
    pub fn from_file(path: &Path) -> Result<Tokens, Error> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: shown.clone(),
            source,
        })?;
        let invalid = |message: String| Error::Invalid {
            path: shown.clone(),
            message,
        };
        let file: TokenFile =
            toml::from_str(&text).map_err(|e| invalid(e.message().to_string()))?;
        let mut tokens = Tokens::none();
        for entry in file.token {
            let hash: [u8; 32] = hex::decode(&entry.sha256)
                .ok()
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| {
                    invalid(format!(
                        "token {:?}: sha256 is not 64 hexadecimal digits",
                        entry.name
                    ))
                })?;
            if tokens.has_name(&entry.name) {
                return Err(invalid(format!("token {:?} is named twice", entry.name)));
            }
            tokens.by_hash.insert(
                hash,
                Arc::new(Identity {
                    name: entry.name,
                    role: entry.role,
                }),
            );
        }
        Ok(tokens)
    }

    /// Whether a token is named `name`.
    pub fn has_name(&self, name: &str) -> bool {
        self.by_hash.values().any(|i| i.name == name)
    }

    /// Adds `token` as `identity` (for a token given directly, from the
    /// environment).
    pub fn with_token(mut self, token: &str, identity: Identity) -> Tokens {
        self.by_hash.insert(digest(token), Arc::new(identity));
        self
    }

    /// Who `token` is, if any configured token matches.
    pub fn identify(&self, token: &str) -> Option<Arc<Identity>> {
        if let Some(identity) = self
            .verified
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
        {
            return Some(identity.clone());
        }
        let identity = self.by_hash.get(&digest(token))?.clone();
        let mut verified = self.verified.write().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(token.into(), identity.clone());
        Some(identity)
    }

    /// Checks the credential of an `Authorization` header value (`None`:
    /// none given) for `needed`: the caller's identity, `None` when no
    /// token is configured, or why it is refused.
    pub fn authorize(
        &self,
        authorization: Option<&str>,
        needed: Role,
    ) -> Result<Option<Arc<Identity>>, Denied> {
        if self.is_empty() {
            return Ok(None);
        }
        let Some(value) = authorization else {
            return Err(Denied::Unauthenticated(format!(
                "this call needs a token with the {} role: send `Authorization: Bearer <token>`",
                needed.as_str()
            )));
        };
        let token = credential(value).ok_or_else(|| {
            Denied::Unauthenticated(
                "the Authorization header is neither `Bearer <token>` nor `Basic` credentials"
                    .to_string(),
            )
        })?;
        let identity = self
            .identify(&token)
            .ok_or_else(|| Denied::Unauthenticated("the token is not known here".to_string()))?;
        if identity.role < needed {
            return Err(Denied::Forbidden(format!(
                "{} has the {} role; this call needs {}",
                identity.name,
                identity.role.as_str(),
                needed.as_str()
            )));
        }
        Ok(Some(identity))
    }
}

/// The token in an `Authorization` header value: a bearer token (borrowed,
/// the common case costs no allocation), or the password of basic
/// credentials (the user name is not checked).
pub fn credential(value: &str) -> Option<Cow<'_, str>> {
    // Byte-wise (the header is ASCII when it is usable at all): this runs on
    // every request, and `str`'s pattern machinery costs more than the rest
    // of the check.
    let value = value.trim_ascii();
    let space = value.bytes().position(|b| b == b' ')?;
    let (scheme, rest) = (&value[..space], value[space + 1..].trim_ascii());
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!rest.is_empty()).then_some(Cow::Borrowed(rest));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (_, password) = text.split_once(':')?;
        return (!password.is_empty()).then(|| Cow::Owned(password.to_string()));
    }
    None
}

/// A new random token (256 bits, hexadecimal) and its file entry.
pub fn new_token(name: &str, role: Role) -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token = hex::encode(bytes);
    let entry = format!(
        "\n[[token]]\nname = {name:?}\nrole = \"{}\"\nsha256 = \"{}\"\n",
        role.as_str(),
        hex::encode(digest(&token))
    );
    (token, entry)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> (Tokens, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let (reader, read_entry) = new_token("dashboards", Role::Read);
        let (writer, write_entry) = new_token("ingest", Role::Write);
        std::fs::write(&path, format!("{read_entry}{write_entry}")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&reader) && !text.contains(&writer),
            "tokens are kept hashed"
        );
        (Tokens::from_file(&path).unwrap(), reader, writer)
    }

    #[test]
    fn roles_include_the_ones_before_them() {
        let (tokens, reader, writer) = tokens();
        let bearer = |t: &str| format!("Bearer {t}");
        assert_eq!(
            tokens
                .authorize(Some(&bearer(&reader)), Role::Read)
                .unwrap()
                .unwrap()
                .name,
            "dashboards"
        );
        assert!(matches!(
            tokens.authorize(Some(&bearer(&reader)), Role::Write),
            Err(Denied::Forbidden(m)) if m.contains("dashboards has the read role")
        ));
        assert!(tokens.authorize(Some(&bearer(&writer)), Role::Read).is_ok());
        assert!(
            tokens
                .authorize(Some(&bearer(&writer)), Role::Write)
                .is_ok()
        );
        assert!(matches!(
            tokens.authorize(Some(&bearer(&writer)), Role::Admin),
            Err(Denied::Forbidden(_))
        ));
        assert!(matches!(
            tokens.authorize(None, Role::Read),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            tokens.authorize(Some("Bearer nope"), Role::Read),
            Err(Denied::Unauthenticated(m)) if !m.contains("nope")
        ));
    }

    #[test]
    fn basic_credentials_carry_the_token_as_password() {
        let (tokens, reader, _) = tokens();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("anyone:{reader}"));
        assert!(
            tokens
                .authorize(Some(&format!("Basic {basic}")), Role::Read)
                .is_ok()
        );
        assert_eq!(credential("Bearer  abc "), Some("abc".into()));
        assert_eq!(credential("Token abc"), None);
        assert_eq!(credential("Basic !!!"), None);
    }

    #[test]
    fn no_tokens_check_nothing() {
        assert_eq!(Tokens::none().authorize(None, Role::Admin), Ok(None));
    }

    #[test]
    fn bad_files_are_named_without_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        for (text, named) in [
            (
                "[[token]]\nname = \"a\"\nrole = \"root\"\nsha256 = \"00\"\n",
                "unknown variant",
            ),
            (
                "[[token]]\nname = \"a\"\nrole = \"read\"\nsha256 = \"00\"\n",
                "64 hexadecimal",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let message = Tokens::from_file(&path).unwrap_err().to_string();
            assert!(message.contains(named), "{message}");
        }
    }
}
