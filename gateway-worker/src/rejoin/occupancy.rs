//! Who is in which voice channel, shared between the shards (which learn it
//! from GUILD_CREATE and VOICE_STATE_UPDATE) and the rejoin check (which
//! needs it for user limits: Discord's REST API cannot tell).

use std::collections::HashMap;

use parking_lot::RwLock;

use super::GatewayView;
use crate::tracker::Tracker;

#[derive(Debug, Default)]
struct GuildVoice {
    /// user → channel
    users: HashMap<u64, u64>,
    stale: bool,
}

/// Voice occupancy of every guild the worker watches. Shards write, rejoin
/// checks read; one lock, held only for map updates and one scan.
#[derive(Debug, Default)]
pub struct VoiceOccupancy {
    guilds: RwLock<HashMap<u64, GuildVoice>>,
}

impl VoiceOccupancy {
    pub fn new() -> Self {
        Self::default()
    }

    /// A full picture of a guild (GUILD_CREATE, or a restored state).
    /// `stale`: it may be out of date (restored, not yet confirmed).
    pub fn replace_guild(
        &self,
        guild: u64,
        users: impl IntoIterator<Item = (u64, u64)>,
        stale: bool,
    ) {
        let users = users.into_iter().collect();
        self.guilds
            .write()
            .insert(guild, GuildVoice { users, stale });
    }

    /// One VOICE_STATE_UPDATE: `None` is a leave.
    pub fn voice_update(&self, guild: u64, user: u64, channel: Option<u64>) {
        let mut guilds = self.guilds.write();
        let g = guilds.entry(guild).or_insert_with(|| GuildVoice {
            users: HashMap::new(),
            // Seen only through updates: not a full picture.
            stale: true,
        });
        match channel {
            Some(c) => {
                g.users.insert(user, c);
            }
            None => {
                g.users.remove(&user);
            }
        }
    }

    /// Outage, or a fresh session waiting for the guild's GUILD_CREATE.
    pub fn set_stale(&self, guild: u64) {
        if let Some(g) = self.guilds.write().get_mut(&guild) {
            g.stale = true;
        }
    }

    /// The bot left the guild.
    pub fn remove_guild(&self, guild: u64) {
        self.guilds.write().remove(&guild);
    }

    /// Copy one guild from a shard's tracker (after a snapshot, an outage
    /// or a removal): gone from the tracker means gone here.
    pub fn sync_guild(&self, guild: u64, tracker: &Tracker) {
        match tracker.guilds.get(&guild) {
            Some(g) => {
                self.replace_guild(guild, g.users.iter().map(|(u, e)| (*u, e.channel)), g.stale)
            }
            None => self.remove_guild(guild),
        }
    }

    /// Copy every guild of a shard's tracker (at start, and after READY).
    pub fn sync_all(&self, tracker: &Tracker) {
        for guild in tracker.guilds.keys() {
            self.sync_guild(*guild, tracker);
        }
    }
}

impl GatewayView for VoiceOccupancy {
    fn occupants(&self, guild: u64, channel: u64) -> Option<Vec<u64>> {
        let guilds = self.guilds.read();
        let g = guilds.get(&guild).filter(|g| !g.stale)?;
        Some(
            g.users
                .iter()
                .filter(|(_, c)| **c == channel)
                .map(|(u, _)| *u)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupancy_is_known_only_from_a_fresh_snapshot() {
        let o = VoiceOccupancy::new();
        assert_eq!(o.occupants(1, 10), None, "unknown guild");
        o.voice_update(1, 100, Some(10));
        assert_eq!(
            o.occupants(1, 10),
            None,
            "updates alone are not a full picture"
        );
        o.replace_guild(1, [(100, 10), (101, 11)], false);
        assert_eq!(o.occupants(1, 10), Some(vec![100]));
        o.voice_update(1, 101, Some(10));
        o.voice_update(1, 100, None);
        assert_eq!(o.occupants(1, 10), Some(vec![101]));
        o.set_stale(1);
        assert_eq!(o.occupants(1, 10), None, "outage");
        o.replace_guild(1, [], false);
        assert_eq!(o.occupants(1, 10), Some(vec![]));
        o.remove_guild(1);
        assert_eq!(o.occupants(1, 10), None);
    }

    #[test]
    fn follows_a_tracker() {
        let o = VoiceOccupancy::new();
        let mut t = Tracker::new();
        t.guild_create(1, [(100, 10, "a"), (101, 10, "b")]);
        o.sync_all(&t);
        let mut users = o.occupants(1, 10).unwrap();
        users.sort_unstable();
        assert_eq!(users, vec![100, 101]);
        t.guild_unavailable(1);
        o.sync_guild(1, &t);
        assert_eq!(o.occupants(1, 10), None, "outage: unknown");
        t.guild_removed(1);
        o.sync_guild(1, &t);
        assert_eq!(o.occupants(1, 10), None);
    }
}
