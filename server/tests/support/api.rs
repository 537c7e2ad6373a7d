//! The HTTP API as its tests call it: a node with the API on, requests with the right key,
//! and checks of JSON answers. Shared by the API's test files.

use std::time::Duration;

use serde_json::{Value, json};

use super::{HttpResponse, Node};

pub(crate) const API_KEY: &str = "test-api-key-7c1e5a90d3b2";
/// Bound of one API request; a batch of 20,000 takes seconds on a loaded debug build.
pub(crate) const REQUEST: Duration = Duration::from_secs(60);

pub(crate) fn bearer() -> String {
    format!("Bearer {API_KEY}")
}

/// The node id of [`api_node`]s.
pub(crate) const SOLO: &str = "solo";

/// A node with the in-memory broker and the API on.
pub(crate) async fn api_node(extra: &[&str]) -> Node {
    api_node_with_env(extra, &[]).await
}

/// [`api_node`] with environment variables.
pub(crate) async fn api_node_with_env(extra: &[&str], env: &[(&str, &str)]) -> Node {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--node-id",
        SOLO,
        "--api-key",
        API_KEY,
    ];
    args.extend_from_slice(extra);
    Node::spawn(&args, env).await
}

/// `method path` with the right key and a JSON body.
pub(crate) async fn call(node: &Node, method: &str, path: &str, body: &str) -> HttpResponse {
    let authorization = bearer();
    let headers = [
        ("Authorization", authorization.as_str()),
        ("Content-Type", "application/json"),
    ];
    node.http(method, path, &headers, body.as_bytes(), REQUEST)
        .await
}

pub(crate) async fn post(node: &Node, path: &str, body: &Value) -> HttpResponse {
    call(node, "POST", path, &body.to_string()).await
}

pub(crate) async fn get(node: &Node, path: &str) -> HttpResponse {
    call(node, "GET", path, "").await
}

/// The JSON body of a response, which must say it is JSON.
pub(crate) fn body(response: &HttpResponse) -> Value {
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{response:?}"
    );
    serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("not JSON ({e}): {response:?}"))
}

/// Checks the status and the error code of a refused request.
pub(crate) fn assert_error(response: &HttpResponse, status: u16, code: &str) {
    assert_eq!(response.status, status, "{response:?}");
    let body = body(response);
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

pub(crate) fn message(room: &str, from: &str, text: &str) -> Value {
    json!({"room": room, "from": from, "text": text})
}
