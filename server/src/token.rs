//! Optional token authentication: with `--auth-secret`, a client's name comes from a JWT signed
//! with HS256 by whoever issues names (the application's login), not from the client's say-so.
//!
//! The token's `sub` claim is the user name and `exp` (required) its expiry; `nbf`, when
//! present, is honoured. With `--auth-issuer` / `--auth-audience` the token must also name
//! that issuer in `iss` and that audience in `aud` (a string or an array, RFC 7519), so a token
//! minted for another service sharing the secret is refused. Browsers cannot set headers on a
//! WebSocket handshake, so the token travels in the query, `/ws?token=<jwt>`; other clients may
//! send `Authorization: Bearer <jwt>` instead. A `name` given next to a token must equal its
//! `sub`.
//!
//! Two optional claims say where the holder may go: `rooms` (rooms it may join) and `publish`
//! (rooms it may send to), each a list of room names and `<prefix>.*` patterns; see
//! [`crate::access`] for what they allow.
//!
//! A token is honoured until `exp` plus the clock leeway, both at the handshake and after it:
//! [`TokenAuth::name`] returns that moment, and the session is closed then (close code 4003),
//! so a connection never outlives the token that opened it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::access::Grants;
use crate::admission::CredentialError;

/// Seconds of clock difference tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;
/// Shortest secret accepted: HS256 is only as strong as its key, and RFC 7518 (3.2) asks for
/// a key at least as long as the hash, 256 bits.
pub(crate) const MIN_SECRET_BYTES: usize = 32;

/// Checks tokens against the node's secret and expectations.
pub(crate) struct TokenAuth {
    key: DecodingKey,
    validation: Validation,
}

/// What a token must say besides its signature.
#[derive(Debug, Clone, Default)]
pub(crate) struct Expected<'a> {
    /// Required value of `iss`.
    pub issuer: Option<&'a str>,
    /// Required member of `aud`.
    pub audience: Option<&'a str>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    /// Unix seconds; a float is allowed, as in the `NumericDate` of RFC 7519.
    exp: f64,
    /// Rooms the holder may join; see [`crate::access`].
    #[serde(default)]
    rooms: Option<Vec<String>>,
    /// Rooms the holder may send to.
    #[serde(default)]
    publish: Option<Vec<String>>,
}

/// A name taken from a valid token, and until when the token holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    /// The token's `sub`.
    pub name: String,
    /// `exp` plus the leeway; `None` when that lies beyond what the clock can represent.
    pub expires: Option<SystemTime>,
    /// The rooms the token lets its holder join and send to.
    pub grants: Grants,
}

/// A secret too short to resist guessing; the message never contains the secret.
#[derive(Debug, thiserror::Error)]
#[error(
    "--auth-secret (CHAT_AUTH_SECRET) must be at least {MIN_SECRET_BYTES} bytes: make one with \
     `openssl rand -base64 32`"
)]
pub struct WeakSecret;

/// Refuses a secret shorter than [`MIN_SECRET_BYTES`].
pub(crate) fn check_secret(secret: &[u8]) -> Result<(), WeakSecret> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(WeakSecret);
    }
    Ok(())
}

impl TokenAuth {
    /// A checker of HS256 tokens signed with `secret` that say what `expected` asks for.
    pub(crate) fn new(secret: &[u8], expected: &Expected<'_>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = expected.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        // Without an audience of its own the node is nobody's audience: a token that names one
        // is meant for someone else, and the library refuses it (RFC 7519, 4.1.3).
        if let Some(audience) = expected.audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        validation.required_spec_claims = required.into_iter().map(str::to_owned).collect();
        TokenAuth {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// The user name a connection may use, given its token and the name it asked for, and
    /// until when it may use it.
    pub(crate) fn name(
        &self,
        token: Option<&str>,
        requested: Option<&str>,
    ) -> Result<Grant, CredentialError> {
        let token = token.ok_or(CredentialError::MissingToken)?;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => CredentialError::Expired,
                ErrorKind::ImmatureSignature => CredentialError::NotYetValid,
                _ => CredentialError::InvalidToken(error),
            })?
            .claims;
        chat_protocol::validate_name(&claims.sub).map_err(CredentialError::BadName)?;
        if requested.is_some_and(|name| name != claims.sub) {
            return Err(CredentialError::NameMismatch);
        }
        // The library compares whole seconds; this keeps the handshake's cut-off the very
        // moment at which an open session is closed.
        let expires = honoured_until(claims.exp);
        if expires.is_some_and(|at| at <= SystemTime::now()) {
            return Err(CredentialError::Expired);
        }
        Ok(Grant {
            name: claims.sub,
            expires,
            grants: Grants {
                verified: true,
                rooms: claims.rooms,
                publish: claims.publish,
            },
        })
    }
}

/// The moment a token expiring at `exp` stops being honoured: the leeway that lets a handshake
/// in late also lets the session run that long, so no connection is let in only to be closed
/// at once.
fn honoured_until(exp: f64) -> Option<SystemTime> {
    let seconds = Duration::try_from_secs_f64(exp).ok()?;
    UNIX_EPOCH
        .checked_add(seconds)?
        .checked_add(Duration::from_secs(LEEWAY_SECS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn token(secret: &[u8], claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn plain() -> TokenAuth {
        TokenAuth::new(SECRET, &Expected::default())
    }

    #[test]
    fn the_name_comes_from_a_valid_token_with_its_expiry() {
        let auth = plain();
        let exp = now() + 60;
        let valid = token(SECRET, serde_json::json!({"sub": "ada", "exp": exp}));
        let grant = auth.name(Some(&valid), None).unwrap();
        assert_eq!(grant.name, "ada");
        assert_eq!(
            grant.expires,
            Some(UNIX_EPOCH + Duration::from_secs(exp + LEEWAY_SECS))
        );
        assert_eq!(auth.name(Some(&valid), Some("ada")).unwrap().name, "ada");
        assert!(matches!(
            auth.name(Some(&valid), Some("eve")),
            Err(CredentialError::NameMismatch)
        ));
        assert_eq!(
            grant.grants,
            Grants {
                verified: true,
                rooms: None,
                publish: None
            }
        );
        let claimed = token(
            SECRET,
            serde_json::json!({"sub": "ada", "exp": exp, "rooms": ["team.*"], "publish": []}),
        );
        let grants = auth.name(Some(&claimed), None).unwrap().grants;
        assert_eq!(grants.rooms, Some(vec!["team.*".to_owned()]));
        assert_eq!(grants.publish, Some(Vec::new()));
        let far = token(SECRET, serde_json::json!({"sub": "ada", "exp": u64::MAX}));
        assert_eq!(auth.name(Some(&far), None).unwrap().expires, None);
    }

    #[test]
    fn refuses_missing_expired_forged_and_unnamed_tokens() {
        let auth = plain();
        assert!(matches!(
            auth.name(None, Some("ada")),
            Err(CredentialError::MissingToken)
        ));
        let expired = token(SECRET, serde_json::json!({"sub": "ada", "exp": now() - 60}));
        assert!(matches!(
            auth.name(Some(&expired), None),
            Err(CredentialError::Expired)
        ));
        let forged = token(
            b"another secret of thirty-two bytes",
            serde_json::json!({"sub": "ada", "exp": now() + 60}),
        );
        let no_exp = token(SECRET, serde_json::json!({"sub": "ada"}));
        let no_sub = token(SECRET, serde_json::json!({"exp": now() + 60}));
        let bad_name = token(SECRET, serde_json::json!({"sub": "", "exp": now() + 60}));
        for bad in [forged, no_exp, no_sub, "garbage".to_owned()] {
            assert!(
                matches!(
                    auth.name(Some(&bad), None),
                    Err(CredentialError::InvalidToken(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            auth.name(Some(&bad_name), None),
            Err(CredentialError::BadName(_))
        ));
    }

    #[test]
    fn a_token_is_honoured_until_exp_plus_the_leeway() {
        let auth = plain();
        let late = token(SECRET, serde_json::json!({"sub": "ada", "exp": now() - 2}));
        let grant = auth.name(Some(&late), None).unwrap();
        assert!(grant.expires.unwrap() > SystemTime::now());
        let gone = token(SECRET, serde_json::json!({"sub": "ada", "exp": now() - 6}));
        assert!(matches!(
            auth.name(Some(&gone), None),
            Err(CredentialError::Expired)
        ));
    }

    #[test]
    fn not_before_is_enforced_with_the_leeway() {
        let auth = plain();
        let exp = now() + 600;
        let early = token(
            SECRET,
            serde_json::json!({"sub": "ada", "exp": exp, "nbf": now() + 60}),
        );
        assert!(matches!(
            auth.name(Some(&early), None),
            Err(CredentialError::NotYetValid)
        ));
        let skewed = token(
            SECRET,
            serde_json::json!({"sub": "ada", "exp": exp, "nbf": now() + 2}),
        );
        assert!(auth.name(Some(&skewed), None).is_ok());
    }

    #[test]
    fn issuer_and_audience_are_required_when_configured() {
        let auth = TokenAuth::new(
            SECRET,
            &Expected {
                issuer: Some("https://login.example"),
                audience: Some("chat"),
            },
        );
        let exp = now() + 60;
        let with = |extra: serde_json::Value| {
            let mut claims = serde_json::json!({"sub": "ada", "exp": exp});
            claims
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            auth.name(Some(&token(SECRET, claims)), None)
        };
        let iss = "https://login.example";
        assert!(with(serde_json::json!({"iss": iss, "aud": "chat"})).is_ok());
        assert!(with(serde_json::json!({"iss": iss, "aud": ["mail", "chat"]})).is_ok());
        for refused in [
            serde_json::json!({"iss": iss}),
            serde_json::json!({"aud": "chat"}),
            serde_json::json!({"iss": "https://evil.example", "aud": "chat"}),
            serde_json::json!({"iss": iss, "aud": "mail"}),
            serde_json::json!({"iss": iss, "aud": ["mail", "calendar"]}),
        ] {
            assert!(
                matches!(with(refused.clone()), Err(CredentialError::InvalidToken(_))),
                "{refused}"
            );
        }
        // A node with no audience of its own is not the audience of a token that names one.
        let aimed = token(
            SECRET,
            serde_json::json!({"sub": "ada", "exp": exp, "aud": "mail"}),
        );
        assert!(plain().name(Some(&aimed), None).is_err());
    }

    #[test]
    fn short_secrets_are_refused_without_being_echoed() {
        let error = check_secret(b"hunter2").unwrap_err().to_string();
        assert!(!error.contains("hunter2"), "{error}");
        assert!(error.contains("32 bytes"), "{error}");
        assert!(check_secret(SECRET).is_ok());
    }
}
