#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The shared JSON test vectors (`protocol/vectors/`, written by
//! `generate.py`, HMACs computed independently in Python) against the
//! Rust implementation.

use serde_json::Value;
use voicewatch_protocol::close::CloseCode;
use voicewatch_protocol::subject::Subject;
use voicewatch_protocol::{ClientFrame, Keyring, Scope, ServerFrame, Stamp, VoiceEvent};

fn load(name: &str) -> Value {
    let path = format!("{}/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// The variant name of an error's Debug output: `InvalidSnowflake { .. }`
/// → `InvalidSnowflake`.
fn variant<E: std::fmt::Debug>(e: &E) -> String {
    format!("{e:?}")
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn events() {
    let v = load("events.json");
    for case in v["valid"].as_array().unwrap() {
        let json = s(case, "json");
        let e = VoiceEvent::from_slice(json.as_bytes())
            .unwrap_or_else(|err| panic!("{}: {err}", s(case, "name")));
        assert_eq!(e.kind.as_type(), s(case, "type"));
        // Printing and parsing again gives the same event.
        assert_eq!(VoiceEvent::from_slice(&e.to_bytes()).unwrap(), e);
    }
    for case in v["invalid"].as_array().unwrap() {
        let err = VoiceEvent::from_slice(s(case, "json").as_bytes()).expect_err(s(case, "name"));
        assert_eq!(variant(&err), s(case, "error"), "{}", s(case, "name"));
    }
}

#[test]
fn client_frames() {
    let v = load("frames.json");
    for case in v["client"]["valid"].as_array().unwrap() {
        let f = ClientFrame::parse(s(case, "json").as_bytes())
            .unwrap_or_else(|e| panic!("{}: {e}", s(case, "name")));
        let want = &case["frame"];
        match &f {
            ClientFrame::Ping => assert_eq!(s(want, "type"), "ping"),
            ClientFrame::Auth {
                token,
                resume,
                scope,
            } => {
                assert_eq!(s(want, "type"), "auth");
                assert_eq!(token, s(want, "token"));
                assert_eq!(resume.as_deref(), want["resume"].as_str());
                let scope_name = match scope {
                    Scope::Guild => "guild",
                    Scope::SelfOnly => "self",
                };
                assert_eq!(scope_name, s(want, "scope"));
            }
        }
        assert_eq!(ClientFrame::parse(f.to_json().as_bytes()).unwrap(), f);
    }
    for case in v["client"]["invalid"].as_array().unwrap() {
        let err = ClientFrame::parse(s(case, "json").as_bytes()).expect_err(s(case, "name"));
        assert_eq!(variant(&err), s(case, "error"), "{}", s(case, "name"));
    }
}

#[test]
fn server_frames() {
    let v = load("frames.json");
    for case in v["server"]["valid"].as_array().unwrap() {
        let json = s(case, "json");
        let f = ServerFrame::parse(json.as_bytes())
            .unwrap_or_else(|e| panic!("{}: {e}", s(case, "name")));
        // The edge's encoders produce these bytes exactly.
        assert_eq!(f.to_json(), json, "{}", s(case, "name"));
    }
    for case in v["server"]["invalid"].as_array().unwrap() {
        let err = ServerFrame::parse(s(case, "json").as_bytes()).expect_err(s(case, "name"));
        assert_eq!(variant(&err), s(case, "error"), "{}", s(case, "name"));
    }
}

#[test]
fn close_codes() {
    let v = load("close_codes.json");
    let cases = v.as_array().unwrap();
    assert_eq!(cases.len(), CloseCode::ALL.len());
    for case in cases {
        let code = CloseCode::from_code(case["code"].as_u64().unwrap() as u16).unwrap();
        assert_eq!(format!("{code:?}"), s(case, "name"));
        assert_eq!(code.error_code(), s(case, "errorCode"));
        assert_eq!(code.client_action().as_str(), s(case, "clientAction"));
    }
}

#[test]
fn signatures() {
    let v = load("signatures.json");
    let cases = v.as_array().unwrap();
    assert!(cases.len() >= 3);
    for case in cases {
        let name = s(case, "name");
        let keys = Keyring::parse(s(case, "keys")).unwrap();
        let stamp = Stamp {
            timestamp: s(case, "timestamp").to_owned(),
            key_id: case["keyId"].as_str().map(str::to_owned),
            signature: s(case, "signature").to_owned(),
        };
        let got = keys.verify(
            &stamp,
            s(case, "body").as_bytes(),
            case["nowMs"].as_i64(),
            case["toleranceMs"].as_i64().unwrap(),
        );
        match s(case, "result") {
            "ok" => assert_eq!(got, Ok(()), "{name}"),
            want => assert_eq!(variant(&got.expect_err(name)), want, "{name}"),
        }
        // Where the vector is a plain valid stamp with a key id, signing
        // produces the same header.
        if s(case, "result") == "ok" && case["keyId"].as_str() == Some(keys.signing_key_id()) {
            let ts: i64 = stamp.timestamp.parse().unwrap();
            assert_eq!(keys.sign(ts, s(case, "body").as_bytes()), stamp, "{name}");
        }
    }
}

#[test]
fn subjects() {
    let v = load("subjects.json");
    for case in v["valid"].as_array().unwrap() {
        let subj = Subject::parse(s(case, "prefix"), s(case, "subject")).unwrap();
        assert_eq!(subj.guild_id.to_string(), s(case, "guildId"));
        assert_eq!(subj.kind.as_type(), s(case, "type"));
        assert_eq!(subj.to_string_with(s(case, "prefix")), s(case, "subject"));
    }
    for case in v["invalid"].as_array().unwrap() {
        let err =
            Subject::parse(s(case, "prefix"), s(case, "subject")).expect_err(s(case, "subject"));
        assert_eq!(variant(&err), s(case, "error"), "{}", s(case, "subject"));
    }
}
