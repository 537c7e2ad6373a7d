//! WebSocket close codes the server uses. Codes below 4000 are the standard ones of RFC 6455;
//! 4000–4999 are this protocol's own.

/// The client closed, or the server ended the session normally.
pub const NORMAL: u16 = 1000;
/// The node is shutting down; reconnect (a load balancer picks another node).
pub const GOING_AWAY: u16 = 1001;
/// The peer broke the WebSocket protocol (for example an unmasked client frame).
pub const PROTOCOL_ERROR: u16 = 1002;
/// A text frame was not valid UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// The handshake asked for something the policy refuses, such as an invalid name.
pub const POLICY_VIOLATION: u16 = 1008;
/// A frame or message exceeded the node's frame limit.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The node failed in a way that is not the client's fault.
pub const INTERNAL_ERROR: u16 = 1011;
/// The client read too slowly: its outbound queue overflowed. Reconnect and catch up.
pub const SLOW_CONSUMER: u16 = 4001;
/// The client answered no ping and sent nothing for the node's idle timeout.
pub const IDLE_TIMEOUT: u16 = 4002;
/// The token the connection was opened with has expired. Reconnect with a fresh token;
/// reconnecting with the same one is refused.
pub const TOKEN_EXPIRED: u16 = 4003;
