//! API keys: who may use the HTTP API.
//!
//! Only SHA-256 digests of the keys are kept, and a presented key is hashed and compared with
//! every digest in constant time, so neither the comparison's timing nor the key's length
//! tells a caller how close a guess was. Several keys may be valid at once, for rotation.
//! Nothing here formats a key: `Debug` shows only how many there are.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::admission::CredentialError;

/// Shortest key accepted; `openssl rand -base64 32` gives 44 characters.
const MIN_KEY_CHARS: usize = 16;

/// The keys that unlock the API.
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} key(s), redacted)", self.digests.len())
    }
}

/// Why a configured key is refused; never contains the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error(
        "an API key must be at least {MIN_KEY_CHARS} characters long (make one with \
         `openssl rand -base64 32`)"
    )]
    /// Shorter than the shortest key accepted.
    TooShort,
    #[error(
        "an API key may use only visible ASCII characters, since clients send it in an \
         HTTP header"
    )]
    /// A character that an HTTP header cannot carry as is.
    NotVisibleAscii,
}

impl ApiKeys {
    /// The keys, checked; `None` when there are none (the API is off).
    pub fn new(keys: &[String]) -> Result<Option<ApiKeys>, ApiKeyError> {
        let mut digests = Vec::with_capacity(keys.len());
        for key in keys.iter().filter(|key| !key.is_empty()) {
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ApiKeyError::NotVisibleAscii);
            }
            if key.len() < MIN_KEY_CHARS {
                return Err(ApiKeyError::TooShort);
            }
            digests.push(Sha256::digest(key.as_bytes()).into());
        }
        Ok((!digests.is_empty()).then_some(ApiKeys { digests }))
    }

    /// How many keys are accepted (at least one).
    pub fn count(&self) -> usize {
        self.digests.len()
    }

    /// Checks `Authorization: Bearer <key>`.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), CredentialError> {
        let presented = crate::admission::bearer(headers)
            .filter(|token| !token.is_empty())
            .ok_or(CredentialError::MissingKey)?;
        let digest: [u8; 32] = Sha256::digest(presented).into();
        // Every digest is compared, so the time taken does not depend on which one matched.
        let matched = self
            .digests
            .iter()
            .fold(subtle::Choice::from(0), |found, known| {
                found | known.ct_eq(&digest)
            });
        if bool::from(matched) {
            Ok(())
        } else {
            Err(CredentialError::WrongKey)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, header};

    const KEY: &str = "0123456789abcdef-key";

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(authorization).unwrap(),
        );
        headers
    }

    fn keys(list: &[&str]) -> ApiKeys {
        let list: Vec<String> = list.iter().map(|k| (*k).to_owned()).collect();
        ApiKeys::new(&list).unwrap().expect("some keys")
    }

    #[test]
    fn no_keys_means_no_api() {
        assert!(ApiKeys::new(&[]).unwrap().is_none());
        assert!(ApiKeys::new(&[String::new()]).unwrap().is_none());
    }

    #[test]
    fn weak_or_unsendable_keys_are_refused_without_echoing_them() {
        let short = ApiKeys::new(&["secret".to_owned()]).unwrap_err();
        assert_eq!(short, ApiKeyError::TooShort);
        assert!(!short.to_string().contains("secret"));
        let spaced = ApiKeys::new(&["0123456789 abcdef".to_owned()]).unwrap_err();
        assert_eq!(spaced, ApiKeyError::NotVisibleAscii);
    }

    #[test]
    fn accepts_any_configured_key_as_a_bearer_token() {
        let keys = keys(&["another-key-0123456789", KEY]);
        assert!(keys.check(&headers(&format!("Bearer {KEY}"))).is_ok());
        assert!(keys.check(&headers(&format!("bearer  {KEY} "))).is_ok());
        assert!(
            keys.check(&headers("Bearer another-key-0123456789"))
                .is_ok()
        );
    }

    #[test]
    fn tells_missing_from_wrong_keys() {
        let keys = keys(&[KEY]);
        for missing in [
            HeaderMap::new(),
            headers(KEY),
            headers(&format!("Basic {KEY}")),
            headers("Bearer "),
        ] {
            assert!(
                matches!(keys.check(&missing), Err(CredentialError::MissingKey)),
                "{missing:?}"
            );
        }
        for wrong in [format!("Bearer {KEY}x"), format!("Bearer {}", &KEY[1..])] {
            assert!(
                matches!(keys.check(&headers(&wrong)), Err(CredentialError::WrongKey)),
                "{wrong}"
            );
        }
    }

    #[test]
    fn debug_output_hides_the_keys() {
        let shown = format!("{:?}", keys(&[KEY]));
        assert!(!shown.contains(KEY), "{shown}");
    }
}
