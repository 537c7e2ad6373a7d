//! Unit tests of parsing, validation and ids.

use super::*;

fn code_of(text: &str) -> ErrorCode {
    parse_client_frame(text).expect_err(text).code
}

#[test]
fn parses_every_request_type() {
    assert_eq!(
        parse_client_frame(r#"{"type":"join","room":"lobby"}"#).unwrap(),
        ClientFrame::Join {
            room: "lobby".into(),
            since: None,
            reference: None
        }
    );
    assert_eq!(
        parse_client_frame(r#"{"type":"join","room":"lobby","since":"17-3"}"#).unwrap(),
        ClientFrame::Join {
            room: "lobby".into(),
            since: Some("17-3".into()),
            reference: None
        }
    );
    assert_eq!(
        parse_client_frame(r#"{"type":"leave","room":"a.b-c_d","ref":"r1"}"#).unwrap(),
        ClientFrame::Leave {
            room: "a.b-c_d".into(),
            reference: Some("r1".into())
        }
    );
    assert_eq!(
        parse_client_frame(r#"{"type":"members","room":"lobby","after":"Bob","ref":"m"}"#).unwrap(),
        ClientFrame::Members {
            room: "lobby".into(),
            after: Some("Bob".into()),
            reference: Some("m".into())
        }
    );
    assert_eq!(
        code_of(&format!(
            r#"{{"type":"members","room":"lobby","after":"{}"}}"#,
            "x".repeat(129)
        )),
        ErrorCode::BadRequest
    );
    assert_eq!(
        parse_client_frame(r#"{"type":"send","room":"lobby","text":"hi \"you\"","ref":"c1"}"#)
            .unwrap(),
        ClientFrame::Send {
            room: "lobby".into(),
            text: "hi \"you\"".into(),
            reference: Some("c1".into())
        }
    );
}

#[test]
fn ignores_unknown_and_identity_fields() {
    let frame = parse_client_frame(
        r#"{"type":"send","room":"r","text":"t","from":"admin","id":"x","ts":1,"extra":{"a":[1]}}"#,
    )
    .unwrap();
    assert!(matches!(frame, ClientFrame::Send { .. }));
}

#[test]
fn refuses_malformed_frames() {
    for bad in [
        "",
        "   ",
        "not json",
        "{",
        r#"{"type":"join","room":"lobby""#,
        "[\"join\",\"lobby\"]",
        "42",
        "null",
        "\"join\"",
        r#"{"room":"lobby"}"#,
        r#"{"type":7,"room":"lobby"}"#,
        r#"{"type":"join","room":5}"#,
        r#"{"type":"join"}"#,
        r#"{"type":"send","room":"lobby"}"#,
        r#"{"type":"send","room":"lobby","text":""}"#,
        r#"{"type":"send","room":"lobby","text":["a"]}"#,
        r#"{"type":"join","type":"leave","room":"lobby"}"#,
        r#"{"type":"join","room":"lobby","ref":12}"#,
    ] {
        assert_eq!(code_of(bad), ErrorCode::BadRequest, "{bad}");
    }
}

#[test]
fn survives_deep_nesting() {
    let nest = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let in_known_field = format!(r#"{{"type":"join","room":{}}}"#, nest(100_000));
    assert_eq!(code_of(&in_known_field), ErrorCode::BadRequest);
    // Unknown fields are skipped without recursion, so depth there costs nothing.
    let in_unknown_field = format!(r#"{{"type":"join","room":"r","x":{}}}"#, nest(100_000));
    assert!(parse_client_frame(&in_unknown_field).is_ok());
}

#[test]
fn refuses_unknown_types_with_their_ref() {
    let err = parse_client_frame(r#"{"type":"shout","room":"lobby","ref":"q"}"#).unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownType);
    assert_eq!(err.reference.as_deref(), Some("q"));
}

#[test]
fn echoes_ref_of_a_frame_with_wrong_field_types() {
    let err = parse_client_frame(r#"{"type":"send","room":["x"],"ref":"r9"}"#).unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest);
    assert_eq!(err.reference.as_deref(), Some("r9"));
}

#[test]
fn refuses_oversize_refs() {
    let frame = format!(r#"{{"type":"join","room":"r","ref":"{}"}}"#, "x".repeat(65));
    assert_eq!(code_of(&frame), ErrorCode::BadRequest);
}

#[test]
fn validates_room_names() {
    for bad in ["", "has space", "slash/room", "ünïcode", "star*", "a:b"] {
        let frame = serde_json::json!({"type": "join", "room": bad}).to_string();
        assert_eq!(code_of(&frame), ErrorCode::InvalidRoom, "{bad:?}");
    }
    let long = "r".repeat(65);
    assert!(validate_room(&long).is_err());
    assert!(validate_room(&"r".repeat(64)).is_ok());
}

#[test]
fn validates_names() {
    assert!(validate_name("Ada").is_ok());
    assert!(validate_name("名前のある人").is_ok());
    assert!(validate_name(&"n".repeat(32)).is_ok());
    assert!(validate_name(&"é".repeat(32)).is_ok());
    for bad in ["", "   ", "tab\there", "nl\n", "bell\u{7}", "del\u{7f}"] {
        assert!(validate_name(bad).is_err(), "{bad:?}");
    }
    for bidi in [
        '\u{061c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}',
    ] {
        let name = format!("{bidi}nimda");
        assert!(validate_name(&name).is_err(), "{name:?}");
    }
    // Joiners are part of emoji sequences and stay allowed.
    assert!(validate_name("👩\u{200d}💻").is_ok());
    assert!(validate_name(&"n".repeat(33)).is_err());
}

#[test]
fn server_frames_have_the_documented_shape() {
    let frame = ServerFrame::Message {
        room: "lobby".into(),
        id: "m1".into(),
        from: "Ada".into(),
        text: "<b>hi</b>".into(),
        ts: 1,
    };
    assert_eq!(
        frame.to_json(),
        r#"{"type":"message","id":"m1","room":"lobby","from":"Ada","text":"<b>hi</b>","ts":1}"#
    );
    let error = ServerFrame::Error {
        code: ErrorCode::NotJoined,
        message: "join first".into(),
        reference: None,
        retry_after_ms: None,
    };
    assert_eq!(
        error.to_json(),
        r#"{"type":"error","code":"not_joined","message":"join first"}"#
    );
    let parsed: ServerFrame<'static> = serde_json::from_str(&error.to_json()).unwrap();
    assert_eq!(parsed, error);
    let limited = ServerFrame::Error {
        code: ErrorCode::RateLimited,
        message: "slow down".into(),
        reference: Some("c1".into()),
        retry_after_ms: Some(250),
    };
    assert_eq!(
        limited.to_json(),
        r#"{"type":"error","code":"rate_limited","message":"slow down","ref":"c1","retry_after_ms":250}"#
    );
}

#[test]
fn joined_embeds_history_frames_verbatim() {
    let message = r#"{"type":"message","id":"5-0","room":"r","from":"a","text":"t","ts":1}"#;
    let joined = ServerFrame::Joined {
        room: "r".into(),
        count: 2,
        members: vec!["a".into()],
        more_members: true,
        history: vec![EmbeddedFrame::new(message.to_owned()).unwrap()],
        recovered: Some(true),
    };
    assert_eq!(
        joined.to_json(),
        format!(
            r#"{{"type":"joined","room":"r","count":2,"members":["a"],"more_members":true,"history":[{message}],"recovered":true}}"#
        )
    );
    let parsed: ServerFrame<'_> = serde_json::from_str(&joined.to_json()).unwrap();
    assert_eq!(parsed, joined);
}

#[test]
fn presence_and_member_pages_have_the_documented_shape() {
    let presence = ServerFrame::Presence {
        room: "r".into(),
        count: 3,
        joins: Some(vec!["b".into()]),
        leaves: Some(vec![]),
    };
    assert_eq!(
        presence.to_json(),
        r#"{"type":"presence","room":"r","count":3,"joins":["b"],"leaves":[]}"#
    );
    let count_only = ServerFrame::Presence {
        room: "r".into(),
        count: 5000,
        joins: None,
        leaves: None,
    };
    assert_eq!(
        count_only.to_json(),
        r#"{"type":"presence","room":"r","count":5000}"#
    );
    let page = ServerFrame::Members {
        room: "r".into(),
        count: 3,
        members: vec!["c".into()],
        more_members: false,
        reference: Some("m1".into()),
    };
    assert_eq!(
        page.to_json(),
        r#"{"type":"members","room":"r","count":3,"members":["c"],"ref":"m1"}"#
    );
}

#[test]
fn message_ids_order_by_epoch_then_sequence() {
    let id: MessageId = "1732329000000-41".parse().unwrap();
    assert_eq!(
        id,
        MessageId {
            epoch: 1_732_329_000_000,
            seq: 41
        }
    );
    assert_eq!(id.to_string(), "1732329000000-41");
    assert_eq!(id.next().map(|next| next.seq), Some(42));
    assert_eq!(id.successor().seq, 42);
    assert!(id < "1732329000000-100".parse().unwrap());
    assert!(id < "1732329000001-0".parse().unwrap());
    for bad in [
        "",
        "1",
        "1-",
        "-1",
        "a-1",
        "1-2-3",
        "+1-2",
        "1 -2",
        "99999999999999999999-0",
    ] {
        assert_eq!(bad.parse::<MessageId>(), Err(InvalidMessageId), "{bad:?}");
    }
}

#[test]
fn id_arithmetic_never_overflows() {
    let last_of_epoch: MessageId = "7-18446744073709551615".parse().unwrap();
    assert_eq!(last_of_epoch.next(), None);
    assert_eq!(last_of_epoch.successor(), MessageId { epoch: 8, seq: 0 });
    assert!(last_of_epoch.successor() > last_of_epoch);
    assert_eq!(MessageId::MAX.next(), None);
    assert_eq!(MessageId::MAX.successor(), MessageId::MAX);
}

#[test]
fn error_code_names_match_their_serde_names() {
    for code in ErrorCode::ALL {
        assert_eq!(
            serde_json::to_string(&code).unwrap(),
            format!("\"{}\"", code.as_str())
        );
    }
}

#[test]
fn parses_typing_edit_and_delete() {
    assert_eq!(
        parse_client_frame(r#"{"type":"typing","room":"lobby"}"#).unwrap(),
        ClientFrame::Typing {
            room: "lobby".into()
        }
    );
    assert_eq!(
        parse_client_frame(
            r#"{"type":"edit","room":"lobby","id":"17-3","text":"fixed","ref":"e"}"#
        )
        .unwrap(),
        ClientFrame::Edit {
            room: "lobby".into(),
            id: "17-3".into(),
            text: "fixed".into(),
            reference: Some("e".into())
        }
    );
    assert_eq!(
        parse_client_frame(r#"{"type":"delete","room":"lobby","id":"17-3"}"#).unwrap(),
        ClientFrame::Delete {
            room: "lobby".into(),
            id: "17-3".into(),
            reference: None
        }
    );
    for (bad, code) in [
        (r#"{"type":"typing"}"#, ErrorCode::BadRequest),
        (r#"{"type":"typing","room":"a b"}"#, ErrorCode::InvalidRoom),
        (
            r#"{"type":"edit","room":"r","text":"x"}"#,
            ErrorCode::BadRequest,
        ),
        (
            r#"{"type":"edit","room":"r","id":"17-3"}"#,
            ErrorCode::BadRequest,
        ),
        (
            r#"{"type":"edit","room":"r","id":"x","text":"t"}"#,
            ErrorCode::BadRequest,
        ),
        (
            r#"{"type":"delete","room":"r","id":"17"}"#,
            ErrorCode::BadRequest,
        ),
        (r#"{"type":"delete","room":"r"}"#, ErrorCode::BadRequest),
    ] {
        assert_eq!(code_of(bad), code, "{bad}");
    }
    let refused = parse_client_frame(r#"{"type":"delete","room":"r","ref":"d1"}"#).unwrap_err();
    assert_eq!(refused.reference.as_deref(), Some("d1"));
}

#[test]
fn edited_deleted_and_typing_frames_have_the_documented_shape() {
    let edited = ServerFrame::Edited {
        id: "5-2".into(),
        room: "lobby".into(),
        from: "Ada".into(),
        target: "5-1".into(),
        text: "fixed".into(),
        ts: 9,
    };
    assert_eq!(
        edited.to_json(),
        r#"{"type":"edited","id":"5-2","room":"lobby","from":"Ada","target":"5-1","text":"fixed","ts":9}"#
    );
    let deleted = ServerFrame::Deleted {
        id: "5-3".into(),
        room: "lobby".into(),
        from: "Ada".into(),
        target: "5-1".into(),
        ts: 9,
    };
    assert_eq!(
        deleted.to_json(),
        r#"{"type":"deleted","id":"5-3","room":"lobby","from":"Ada","target":"5-1","ts":9}"#
    );
    let typing = ServerFrame::Typing {
        room: "lobby".into(),
        from: "Ada".into(),
    };
    assert_eq!(
        typing.to_json(),
        r#"{"type":"typing","room":"lobby","from":"Ada"}"#
    );
    assert_eq!(ErrorCode::Forbidden.as_str(), "forbidden");
    assert_eq!(ErrorCode::NotFound.as_str(), "not_found");
}
