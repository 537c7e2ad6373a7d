//! Optional token authentication: with `--auth-secret`, a client's name comes from a JWT signed
//! with HS256 by whoever issues names (the application's login), not from the client's say-so.
//!
//! The token's `sub` claim is the user name and `exp` (required) its expiry. Browsers cannot set
//! headers on a WebSocket handshake, so the token travels in the query, `/ws?token=<jwt>`; other
//! clients may send `Authorization: Bearer <jwt>` instead. A `name` given next to a token must
//! equal its `sub`.

use std::collections::HashSet;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Seconds of clock difference tolerated on `exp`.
const LEEWAY_SECS: u64 = 5;

pub struct TokenAuth {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

/// Why a token was refused; the message goes to the client.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("a token is required: connect with /ws?token=<jwt>")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("the token's name is not a valid name: {0}")]
    BadName(String),
    #[error("the name does not match the token")]
    NameMismatch,
}

impl TokenAuth {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.required_spec_claims = HashSet::from(["exp".to_owned(), "sub".to_owned()]);
        TokenAuth {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// The user name a connection may use, given its token and the name it asked for.
    pub fn name(&self, token: Option<&str>, requested: Option<&str>) -> Result<String, AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)?.claims;
        chat_protocol::validate_name(&claims.sub).map_err(AuthError::BadName)?;
        match requested {
            Some(name) if name != claims.sub => Err(AuthError::NameMismatch),
            _ => Ok(claims.sub),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    fn token(secret: &[u8], claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn the_name_comes_from_a_valid_token() {
        let auth = TokenAuth::new(b"s3cret");
        let valid = token(
            b"s3cret",
            serde_json::json!({"sub": "ada", "exp": now() + 60}),
        );
        assert_eq!(auth.name(Some(&valid), None).unwrap(), "ada");
        assert_eq!(auth.name(Some(&valid), Some("ada")).unwrap(), "ada");
        assert!(matches!(
            auth.name(Some(&valid), Some("eve")),
            Err(AuthError::NameMismatch)
        ));
    }

    #[test]
    fn refuses_missing_expired_forged_and_unnamed_tokens() {
        let auth = TokenAuth::new(b"s3cret");
        assert!(matches!(
            auth.name(None, Some("ada")),
            Err(AuthError::Missing)
        ));
        let expired = token(
            b"s3cret",
            serde_json::json!({"sub": "ada", "exp": now() - 60}),
        );
        let forged = token(
            b"other",
            serde_json::json!({"sub": "ada", "exp": now() + 60}),
        );
        let no_exp = token(b"s3cret", serde_json::json!({"sub": "ada"}));
        let no_sub = token(b"s3cret", serde_json::json!({"exp": now() + 60}));
        let bad_name = token(b"s3cret", serde_json::json!({"sub": "", "exp": now() + 60}));
        for bad in [expired, forged, no_exp, no_sub, "garbage".to_owned()] {
            assert!(
                matches!(auth.name(Some(&bad), None), Err(AuthError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            auth.name(Some(&bad_name), None),
            Err(AuthError::BadName(_))
        ));
    }
}
