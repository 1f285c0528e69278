//! Voice-state tracking for the guilds of one shard. Pure: no I/O, no clock.
//!
//! The tracker keeps user → (channel, voice session, change counter) per
//! guild, fed by GUILD_CREATE snapshots and VOICE_STATE_UPDATE dispatches,
//! and turns differences into [`Change`]s:
//!
//! - set → null: `left`; null → set: `joined`; set → other: `moved`;
//! - a snapshot (GUILD_CREATE after a fresh IDENTIFY, after an outage, or
//!   after a restart that could not resume) is diffed against what was known,
//!   so nothing that happened while we were away is missed or invented;
//! - a guild seen for the first time is a baseline: people already in voice
//!   did not just join;
//! - an unavailable guild keeps its map and emits nothing;
//! - a guild the bot was removed from is forgotten without events.
//!
//! # Event ids
//!
//! `e-{guild}-{user}-{voiceSession}-{n}`: `voiceSession` is the user's voice
//! `session_id` from Discord (the same for every bot that watches the guild;
//! it survives moves and is new after each join), `n` counts the changes of
//! that voice session: the join is 1, each move adds one, the leave is the
//! last. Two workers that watched the same voice session agree on every id,
//! and the counter keeps A→B→A→B moves distinct for JetStream
//! de-duplication. A worker that first saw the session in a snapshot starts
//! counting there, so its ids for that session can differ from a worker that
//! saw the join (documented in the README).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    Joined,
    Left,
    Moved,
}

/// One voice change to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub guild: u64,
    pub user: u64,
    pub channel: Option<u64>,
    pub previous: Option<u64>,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceEntry {
    pub channel: u64,
    pub session: String,
    /// Changes of this voice session seen so far (the `n` of the last id).
    pub changes: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuildVoice {
    pub users: HashMap<u64, VoiceEntry>,
    /// True while the map may be out of date: after a fresh IDENTIFY until the
    /// guild's GUILD_CREATE, and during an outage.
    pub stale: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracker {
    pub guilds: HashMap<u64, GuildVoice>,
}

/// The id of a change; see the module docs.
pub fn event_id(guild: u64, user: u64, session: &str, n: u32) -> String {
    let ok = !session.is_empty()
        && session.len() <= 64
        && session
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        format!("e-{guild}-{user}-{session}-{n}")
    } else {
        // Keep ids within the contract's alphabet and length whatever a peer
        // sends, still deterministic.
        format!("e-{guild}-{user}-h{:016x}-{n}", fnv1a(session.as_bytes()))
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_tracked(&self, guild: u64) -> bool {
        self.guilds.contains_key(&guild)
    }

    /// Users in voice in `guild`, user → channel.
    pub fn voice_map(&self, guild: u64) -> HashMap<u64, u64> {
        self.guilds
            .get(&guild)
            .map(|g| g.users.iter().map(|(u, e)| (*u, e.channel)).collect())
            .unwrap_or_default()
    }

    pub fn users_in_voice(&self) -> usize {
        self.guilds.values().map(|g| g.users.len()).sum()
    }

    /// READY of a fresh session (not RESUMED): `guilds` is every guild of the
    /// shard. Guilds we knew and that are not listed were left while we were
    /// away: forgotten without events. The rest wait for their snapshot.
    pub fn ready(&mut self, guilds: impl IntoIterator<Item = u64>) {
        let listed: std::collections::HashSet<u64> = guilds.into_iter().collect();
        self.guilds.retain(|id, _| listed.contains(id));
        for g in self.guilds.values_mut() {
            g.stale = true;
        }
    }

    /// A GUILD_CREATE (available) with its voice states `(user, channel,
    /// session)`. A guild we knew is diffed; a new one is a baseline.
    pub fn guild_create<'a>(
        &mut self,
        guild: u64,
        voice_states: impl IntoIterator<Item = (u64, u64, &'a str)>,
    ) -> Vec<Change> {
        let mut new: HashMap<u64, VoiceEntry> = voice_states
            .into_iter()
            .map(|(u, c, s)| {
                (
                    u,
                    VoiceEntry {
                        channel: c,
                        session: s.to_owned(),
                        changes: 0,
                    },
                )
            })
            .collect();
        let Some(old) = self.guilds.get_mut(&guild) else {
            self.guilds.insert(
                guild,
                GuildVoice {
                    users: new,
                    stale: false,
                },
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (user, before) in &old.users {
            match new.get_mut(user) {
                None => out.push(left(guild, *user, before, &before.session)),
                Some(after) if after.session == before.session => {
                    after.changes = before.changes;
                    if after.channel != before.channel {
                        after.changes += 1;
                        out.push(Change {
                            kind: ChangeKind::Moved,
                            guild,
                            user: *user,
                            channel: Some(after.channel),
                            previous: Some(before.channel),
                            id: event_id(guild, *user, &after.session, after.changes),
                        });
                    }
                }
                Some(after) => {
                    // A new voice session: the user dropped and came back
                    // while we were away.
                    out.push(left(guild, *user, before, &before.session));
                    after.changes = 1;
                    out.push(joined(guild, *user, after));
                }
            }
        }
        for (user, after) in new.iter_mut() {
            if !old.users.contains_key(user) {
                after.changes = 1;
                out.push(joined(guild, *user, after));
            }
        }
        old.users = new;
        old.stale = false;
        // Deterministic order (HashMap iteration is not); stable, so a
        // user's leave stays before their join.
        out.sort_by_key(|c| c.user);
        out
    }

    /// GUILD_DELETE with `unavailable: true`, or an unavailable GUILD_CREATE:
    /// an outage. Nothing is emitted; the map waits for the guild's return.
    pub fn guild_unavailable(&mut self, guild: u64) {
        if let Some(g) = self.guilds.get_mut(&guild) {
            g.stale = true;
        }
    }

    /// GUILD_DELETE without `unavailable`: the bot left the guild.
    pub fn guild_removed(&mut self, guild: u64) {
        self.guilds.remove(&guild);
    }

    /// A VOICE_STATE_UPDATE. Updates for a guild we have no snapshot of are
    /// ignored: its GUILD_CREATE will be the baseline.
    pub fn voice_update(
        &mut self,
        guild: u64,
        user: u64,
        channel: Option<u64>,
        session: &str,
    ) -> Vec<Change> {
        let Some(g) = self.guilds.get_mut(&guild) else {
            return Vec::new();
        };
        match (g.users.get_mut(&user), channel) {
            (None, None) => Vec::new(),
            (None, Some(c)) => {
                let e = VoiceEntry {
                    channel: c,
                    session: session.to_owned(),
                    changes: 1,
                };
                let ch = joined(guild, user, &e);
                g.users.insert(user, e);
                vec![ch]
            }
            (Some(before), None) => {
                let ch = left(guild, user, before, session);
                g.users.remove(&user);
                vec![ch]
            }
            (Some(before), Some(c)) if before.session == session => {
                if before.channel == c {
                    // Mute, deafen, video, or a duplicate: not a voice change.
                    return Vec::new();
                }
                before.changes += 1;
                let ch = Change {
                    kind: ChangeKind::Moved,
                    guild,
                    user,
                    channel: Some(c),
                    previous: Some(before.channel),
                    id: event_id(guild, user, session, before.changes),
                };
                before.channel = c;
                vec![ch]
            }
            (Some(before), Some(c)) => {
                // Another voice session: the old one ended without us seeing
                // its leave.
                let l = left(guild, user, before, &before.session.clone());
                let e = VoiceEntry {
                    channel: c,
                    session: session.to_owned(),
                    changes: 1,
                };
                let j = joined(guild, user, &e);
                *before = e;
                vec![l, j]
            }
        }
    }
}

fn left(guild: u64, user: u64, before: &VoiceEntry, session: &str) -> Change {
    // The leave ends the session we knew; if Discord names another session
    // we did not know its count, so it is that session's first change.
    let n = if session == before.session {
        before.changes + 1
    } else {
        1
    };
    Change {
        kind: ChangeKind::Left,
        guild,
        user,
        channel: None,
        previous: Some(before.channel),
        id: event_id(guild, user, session, n),
    }
}

fn joined(guild: u64, user: u64, e: &VoiceEntry) -> Change {
    Change {
        kind: ChangeKind::Joined,
        guild,
        user,
        channel: Some(e.channel),
        previous: None,
        id: event_id(guild, user, &e.session, e.changes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 2000;

    fn kinds(ch: &[Change]) -> Vec<(ChangeKind, u64, Option<u64>, Option<u64>)> {
        ch.iter()
            .map(|c| (c.kind, c.user, c.previous, c.channel))
            .collect()
    }

    enum Step {
        Create(&'static [(u64, u64, &'static str)]),
        Update(u64, Option<u64>, &'static str),
        Ready(&'static [u64]),
        Unavailable,
        Removed,
    }
    use ChangeKind::*;
    use Step::*;

    type Expect = &'static [(ChangeKind, u64, Option<u64>, Option<u64>)];

    fn run(name: &str, steps: &[(Step, Expect)]) -> Tracker {
        let mut t = Tracker::new();
        for (i, (step, want)) in steps.iter().enumerate() {
            let got = match step {
                Create(vs) => t.guild_create(G, vs.iter().map(|(u, c, s)| (*u, *c, *s))),
                Update(u, c, s) => t.voice_update(G, *u, *c, s),
                Ready(gs) => {
                    t.ready(gs.iter().copied());
                    Vec::new()
                }
                Unavailable => {
                    t.guild_unavailable(G);
                    Vec::new()
                }
                Removed => {
                    t.guild_removed(G);
                    Vec::new()
                }
            };
            assert_eq!(kinds(&got), want.to_vec(), "{name}: step {i}");
        }
        t
    }

    #[test]
    fn table() {
        // (name, steps)
        let cases: Vec<(&str, Vec<(Step, Expect)>)> = vec![
            (
                "baseline emits nothing",
                vec![(Create(&[(1, 40, "a"), (2, 41, "b")]), &[])],
            ),
            (
                "join move leave",
                vec![
                    (Create(&[]), &[]),
                    (Update(1, Some(40), "a"), &[(Joined, 1, None, Some(40))]),
                    (Update(1, Some(41), "a"), &[(Moved, 1, Some(40), Some(41))]),
                    (Update(1, None, "a"), &[(Left, 1, Some(41), None)]),
                ],
            ),
            (
                "duplicates and mute toggles are not changes",
                vec![
                    (Create(&[(1, 40, "a")]), &[]),
                    (Update(1, Some(40), "a"), &[]),
                    (Update(1, Some(40), "a"), &[]),
                    (Update(1, None, "a"), &[(Left, 1, Some(40), None)]),
                    (Update(1, None, "a"), &[]),
                ],
            ),
            (
                "leave of someone never seen in voice",
                vec![(Create(&[]), &[]), (Update(9, None, "z"), &[])],
            ),
            (
                "rejoin with a new session without a leave (missed leave)",
                vec![
                    (Create(&[(1, 40, "a")]), &[]),
                    (
                        Update(1, Some(40), "b"),
                        &[(Left, 1, Some(40), None), (Joined, 1, None, Some(40))],
                    ),
                ],
            ),
            (
                "updates before the guild's snapshot are ignored",
                vec![
                    (Update(1, Some(40), "a"), &[]),
                    (Create(&[(1, 40, "a")]), &[]),
                ],
            ),
            (
                "re-identify snapshot diff: gone, new, moved, rejoined, unchanged",
                vec![
                    (
                        Create(&[(1, 40, "a"), (2, 40, "b"), (3, 40, "c"), (4, 40, "d")]),
                        &[],
                    ),
                    (Ready(&[G]), &[]),
                    (
                        Create(&[(2, 40, "b"), (3, 41, "c"), (4, 40, "d2"), (5, 41, "e")]),
                        &[
                            (Left, 1, Some(40), None),
                            (Moved, 3, Some(40), Some(41)),
                            (Left, 4, Some(40), None),
                            (Joined, 4, None, Some(40)),
                            (Joined, 5, None, Some(41)),
                        ],
                    ),
                ],
            ),
            (
                "outage emits nothing, return is diffed",
                vec![
                    (Create(&[(1, 40, "a"), (2, 40, "b")]), &[]),
                    (Unavailable, &[]),
                    (Create(&[(1, 40, "a")]), &[(Left, 2, Some(40), None)]),
                ],
            ),
            (
                "outage and back unchanged",
                vec![
                    (Create(&[(1, 40, "a")]), &[]),
                    (Unavailable, &[]),
                    (Create(&[(1, 40, "a")]), &[]),
                ],
            ),
            (
                "removed guild is forgotten; coming back is a baseline",
                vec![
                    (Create(&[(1, 40, "a")]), &[]),
                    (Removed, &[]),
                    (Create(&[]), &[]),
                ],
            ),
            (
                "READY without the guild forgets it silently",
                vec![
                    (Create(&[(1, 40, "a")]), &[]),
                    (Ready(&[]), &[]),
                    (Create(&[]), &[]),
                ],
            ),
            (
                "update while stale is applied, then the snapshot agrees",
                vec![
                    (Create(&[(1, 40, "a")]), &[]),
                    (Ready(&[G]), &[]),
                    (Update(1, None, "a"), &[(Left, 1, Some(40), None)]),
                    (Create(&[]), &[]),
                ],
            ),
        ];
        for (name, steps) in cases {
            run(name, &steps);
        }
    }

    #[test]
    fn ids_follow_the_voice_session() {
        let mut t = Tracker::new();
        t.guild_create(G, []);
        let j = t.voice_update(G, 7, Some(40), "s1");
        let m1 = t.voice_update(G, 7, Some(41), "s1");
        let m2 = t.voice_update(G, 7, Some(40), "s1");
        let m3 = t.voice_update(G, 7, Some(41), "s1");
        let l = t.voice_update(G, 7, None, "s1");
        let ids: Vec<String> = [j, m1, m2, m3, l]
            .into_iter()
            .flatten()
            .map(|c| c.id)
            .collect();
        assert_eq!(
            ids,
            [
                "e-2000-7-s1-1",
                "e-2000-7-s1-2",
                "e-2000-7-s1-3",
                "e-2000-7-s1-4",
                "e-2000-7-s1-5"
            ]
        );
    }

    #[test]
    fn two_trackers_agree_and_snapshot_diff_matches_live_ids() {
        // Worker A sees the leave live; worker B was away and diffs a snapshot.
        let mut a = Tracker::new();
        let mut b = Tracker::new();
        for t in [&mut a, &mut b] {
            t.guild_create(G, []);
            t.voice_update(G, 7, Some(40), "s1");
            t.voice_update(G, 7, Some(41), "s1");
        }
        let live = a.voice_update(G, 7, None, "s1");
        b.ready([G]);
        let diffed = b.guild_create(G, []);
        assert_eq!(live, diffed);
        assert_eq!(live[0].id, "e-2000-7-s1-3");
    }

    #[test]
    fn hostile_sessions_give_valid_ids() {
        let long = "x".repeat(300);
        for s in ["", "a b", "ä", long.as_str(), "../../etc"] {
            let id = event_id(u64::MAX, u64::MAX, s, u32::MAX);
            assert!(id.len() <= 128, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b)),
                "{id}"
            );
            assert_eq!(id, event_id(u64::MAX, u64::MAX, s, u32::MAX));
        }
    }

    #[test]
    fn persists_round_trip() {
        let mut t = Tracker::new();
        t.guild_create(G, [(1, 40, "a")]);
        t.voice_update(G, 1, Some(41), "a");
        let json = serde_json::to_string(&t).unwrap();
        let mut back: Tracker = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        let l = back.voice_update(G, 1, None, "a");
        assert_eq!(l[0].id, "e-2000-1-a-2");
    }
}
