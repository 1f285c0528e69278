#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property tests: printing then parsing gives the value back, and a
//! signature over one body never verifies another.

use proptest::prelude::*;
use voicewatch_protocol::subject::Subject;
use voicewatch_protocol::{
    ClientFrame, Cursor, EventId, EventKind, Keyring, Scope, Snowflake, Timestamp, VoiceEvent,
};

fn snowflake() -> impl Strategy<Value = Snowflake> {
    (1u64..=u64::MAX).prop_map(|n| Snowflake::new(n).unwrap())
}

fn event() -> impl Strategy<Value = VoiceEvent> {
    (
        "[A-Za-z0-9._:-]{1,128}",
        0usize..3,
        snowflake(),
        snowflake(),
        snowflake(),
        snowflake(),
        0i64..4_102_444_800_000,
    )
        .prop_filter_map("moved needs two channels", |(id, k, g, u, c1, c2, ms)| {
            let kind = EventKind::ALL[k];
            let (channel, previous) = match kind {
                EventKind::Left => (None, Some(c1)),
                EventKind::Joined => (Some(c1), None),
                EventKind::Moved if c1 == c2 => return None,
                EventKind::Moved => (Some(c2), Some(c1)),
            };
            Some(VoiceEvent {
                id: EventId::new(id).unwrap(),
                kind,
                guild_id: g,
                user_id: u,
                channel_id: channel,
                previous_channel_id: previous,
                occurred_at: Timestamp::from_unix_millis(ms).unwrap(),
                extra: Default::default(),
            })
        })
}

proptest! {
    #[test]
    fn event_round_trip(e in event()) {
        prop_assert_eq!(VoiceEvent::from_slice(&e.to_bytes()).unwrap(), e);
    }

    #[test]
    fn snowflake_round_trip(s in snowflake()) {
        prop_assert_eq!(s.to_string().parse::<Snowflake>().unwrap(), s);
    }

    #[test]
    fn subject_round_trip(g in snowflake(), k in 0usize..3, prefix in "[a-z]{1,8}(\\.[a-z0-9_-]{1,8}){0,2}") {
        let s = Subject::new(g, EventKind::ALL[k]);
        prop_assert_eq!(Subject::parse(&prefix, &s.to_string_with(&prefix)).unwrap(), s);
    }

    #[test]
    fn cursor_round_trip(epoch: u64, seq: u64) {
        let c = Cursor::new(epoch, seq);
        prop_assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
    }

    #[test]
    fn auth_frame_round_trip(token in "\\PC{1,64}", resume in proptest::option::of("\\PC{0,32}"), selfscope: bool) {
        let f = ClientFrame::Auth {
            token,
            resume,
            scope: if selfscope { Scope::SelfOnly } else { Scope::Guild },
        };
        prop_assert_eq!(ClientFrame::parse(f.to_json().as_bytes()).unwrap(), f);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = VoiceEvent::from_slice(&bytes);
        let _ = ClientFrame::parse(&bytes);
        let _ = voicewatch_protocol::ServerFrame::parse(&bytes);
    }

    #[test]
    fn signature_binds_body(a in proptest::collection::vec(any::<u8>(), 0..200),
                            b in proptest::collection::vec(any::<u8>(), 0..200),
                            ts in 0i64..i64::MAX) {
        prop_assume!(a != b);
        let keys = Keyring::parse("k=secret").unwrap();
        let stamp = keys.sign(ts, &a);
        prop_assert!(keys.verify(&stamp, &a, None, 0).is_ok());
        prop_assert!(keys.verify(&stamp, &b, None, 0).is_err());
    }
}
