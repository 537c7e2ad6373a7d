//! Signed tokens for the `--auth-secret` tests: a secret the node accepts, HS256 tokens, and
//! the refusal a client sees when its token does not pass.

use chat_protocol::{ErrorCode, ServerFrame};

use super::Client;

/// A `--auth-secret` of the shortest length a node accepts, 32 bytes.
pub(crate) const AUTH_SECRET: &str = "correct horse battery staple 32b";

/// An HS256 token signed with `secret` that says `claims`.
pub(crate) fn jwt(secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode a token")
}

/// Opens `url` and expects the token refusal: an `unauthorized` error, then close 1008.
pub(crate) async fn expect_unauthorized(url: &str) {
    let mut client = Client::open(url).await;
    match client.recv().await {
        ServerFrame::Error {
            code: ErrorCode::Unauthorized,
            ..
        } => {}
        other => panic!("{url}: expected unauthorized, got {other:?}"),
    }
    assert_eq!(
        client.expect_close().await,
        chat_protocol::close::POLICY_VIOLATION,
        "{url}"
    );
}
