//! The simulated Discord world: guilds with channels, roles, members and voice
//! states, and their JSON in exactly the shapes twilight-model 0.18 accepts
//! (see `shared/discord-gateway.md`).
//!
//! The rejoin check (a later issue) adds REST endpoints over this same model,
//! which is why channels carry user limits and permission overwrites.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Discord channel type numbers used by the simulator.
pub mod channel_type {
    pub const GUILD_TEXT: u8 = 0;
    pub const GUILD_VOICE: u8 = 2;
    pub const GUILD_STAGE_VOICE: u8 = 13;
}

/// A permission overwrite on a channel. `kind` is 0 for a role, 1 for a member
/// (twilight rejects the strings Discord's docs sometimes show).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overwrite {
    pub id: u64,
    pub kind: u8,
    pub allow: u64,
    pub deny: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub id: u64,
    pub name: String,
    pub kind: u8,
    /// 0 means no limit, as in Discord.
    pub user_limit: u32,
    pub overwrites: Vec<Overwrite>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub id: u64,
    pub name: String,
    pub permissions: u64,
    pub position: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: u64,
    pub roles: Vec<u64>,
}

/// One user's voice connection in a guild. `session_id` is the user's voice
/// session: it stays the same across moves and is new after each join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceState {
    pub channel_id: u64,
    pub session_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guild {
    pub id: u64,
    pub name: String,
    pub owner_id: u64,
    pub channels: Vec<Channel>,
    /// Must contain the @everyone role, whose id is the guild's id.
    pub roles: Vec<Role>,
    pub members: BTreeMap<u64, Member>,
    pub voice: BTreeMap<u64, VoiceState>,
    /// In an outage: Discord sends nothing about the guild until it returns.
    pub unavailable: bool,
}

/// VIEW_CHANNEL | CONNECT | SPEAK and the usual text bits: what @everyone gets
/// by default in a simulated guild.
pub const DEFAULT_EVERYONE_PERMISSIONS: u64 = 0x400 | 0x10_0000 | 0x20_0000 | 0x800 | 0x1_0000;

impl Guild {
    /// A guild with an @everyone role, one text channel and `voice_channels`
    /// voice channels with ids `first_channel..`.
    pub fn new(id: u64, owner_id: u64, first_channel: u64, voice_channels: u32) -> Self {
        let mut channels = vec![Channel {
            id: first_channel,
            name: "general".into(),
            kind: channel_type::GUILD_TEXT,
            user_limit: 0,
            overwrites: Vec::new(),
        }];
        for i in 0..u64::from(voice_channels) {
            channels.push(Channel {
                id: first_channel + 1 + i,
                name: format!("voice-{i}"),
                kind: channel_type::GUILD_VOICE,
                user_limit: 0,
                overwrites: Vec::new(),
            });
        }
        let mut members = BTreeMap::new();
        members.insert(
            owner_id,
            Member {
                user_id: owner_id,
                roles: Vec::new(),
            },
        );
        Self {
            id,
            name: format!("guild-{id}"),
            owner_id,
            channels,
            roles: vec![Role {
                id,
                name: "@everyone".into(),
                permissions: DEFAULT_EVERYONE_PERMISSIONS,
                position: 0,
            }],
            members,
            voice: BTreeMap::new(),
            unavailable: false,
        }
    }

    pub fn voice_channel_ids(&self) -> Vec<u64> {
        self.channels
            .iter()
            .filter(|c| {
                c.kind == channel_type::GUILD_VOICE || c.kind == channel_type::GUILD_STAGE_VOICE
            })
            .map(|c| c.id)
            .collect()
    }

    /// The full GUILD_CREATE payload (`d`).
    pub fn to_guild_create(&self) -> Value {
        let voice_states: Vec<Value> = self
            .voice
            .iter()
            .map(|(user, vs)| voice_state_json(None, *user, Some(vs.channel_id), &vs.session_id))
            .collect();
        json!({
            "id": self.id.to_string(),
            "name": self.name,
            "owner_id": self.owner_id.to_string(),
            "afk_timeout": 300,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "features": [],
            "mfa_level": 0,
            "nsfw_level": 0,
            "preferred_locale": "en-US",
            "premium_progress_bar_enabled": false,
            "system_channel_flags": 0,
            "verification_level": 0,
            "roles": self.roles.iter().map(role_json).collect::<Vec<_>>(),
            "channels": self.channels.iter().map(|c| channel_json(c, None)).collect::<Vec<_>>(),
            "members": self.members.values().map(member_json).collect::<Vec<_>>(),
            "voice_states": voice_states,
            "member_count": self.members.len(),
            "large": false,
            "unavailable": false,
        })
    }
}

pub fn role_json(r: &Role) -> Value {
    json!({
        "id": r.id.to_string(),
        "name": r.name,
        "permissions": r.permissions.to_string(),
        "position": r.position,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": null, "tertiary_color": null},
        "hoist": false,
        "managed": false,
        "mentionable": false,
        "flags": 0,
    })
}

/// `guild_id` is included for REST answers and left out inside GUILD_CREATE.
pub fn channel_json(c: &Channel, guild_id: Option<u64>) -> Value {
    let mut v = json!({
        "id": c.id.to_string(),
        "type": c.kind,
        "name": c.name,
        "position": 0,
        "permission_overwrites": c.overwrites.iter().map(|o| json!({
            "id": o.id.to_string(),
            "type": o.kind,
            "allow": o.allow.to_string(),
            "deny": o.deny.to_string(),
        })).collect::<Vec<_>>(),
    });
    if c.kind == channel_type::GUILD_VOICE || c.kind == channel_type::GUILD_STAGE_VOICE {
        v["user_limit"] = json!(c.user_limit);
        v["bitrate"] = json!(64000);
    }
    if let Some(g) = guild_id {
        v["guild_id"] = json!(g.to_string());
    }
    v
}

pub fn member_json(m: &Member) -> Value {
    json!({
        "user": {"id": m.user_id.to_string(), "username": format!("user{}", m.user_id), "discriminator": "0"},
        "roles": m.roles.iter().map(u64::to_string).collect::<Vec<_>>(),
        "joined_at": "2024-01-01T00:00:00.000000+00:00",
        "deaf": false,
        "mute": false,
        "flags": 0,
    })
}

/// A voice state; `guild_id` is `None` inside GUILD_CREATE (twilight fills it
/// in) and always set for VOICE_STATE_UPDATE (twilight does not).
pub fn voice_state_json(
    guild_id: Option<u64>,
    user: u64,
    channel: Option<u64>,
    session_id: &str,
) -> Value {
    let mut v = json!({
        "channel_id": channel.map(|c| c.to_string()),
        "user_id": user.to_string(),
        "session_id": session_id,
        "deaf": false,
        "mute": false,
        "self_deaf": false,
        "self_mute": false,
        "self_video": false,
        "suppress": false,
        "request_to_speak_timestamp": null,
    });
    if let Some(g) = guild_id {
        v["guild_id"] = json!(g.to_string());
    }
    v
}

/// Which shard Discord routes a guild to.
pub fn shard_for(guild_id: u64, total: u32) -> u32 {
    if total == 0 {
        return 0;
    }
    ((guild_id >> 22) % u64::from(total)) as u32
}

/// One gateway frame: compact JSON, keys in the order `t`, `s`, `op`, `d`,
/// because twilight finds them by searching the raw text.
pub fn frame(t: Option<&str>, s: Option<u64>, op: u8, d: &Value) -> String {
    let t = match t {
        Some(t) => format!("\"{t}\""),
        None => "null".into(),
    };
    let s = match s {
        Some(s) => s.to_string(),
        None => "null".into(),
    };
    format!("{{\"t\":{t},\"s\":{s},\"op\":{op},\"d\":{d}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_key_order_and_compactness() {
        let f = frame(
            Some("VOICE_STATE_UPDATE"),
            Some(3),
            0,
            &json!({"op": 1, "a": null}),
        );
        assert!(f.starts_with("{\"t\":\"VOICE_STATE_UPDATE\",\"s\":3,\"op\":0,\"d\":{"));
        assert!(!f.contains(' '));
        let h = frame(None, None, 10, &json!({"heartbeat_interval": 41250}));
        assert_eq!(
            h,
            "{\"t\":null,\"s\":null,\"op\":10,\"d\":{\"heartbeat_interval\":41250}}"
        );
    }

    #[test]
    fn shard_routing_matches_discord() {
        assert_eq!(shard_for(2000, 4), 0);
        assert_eq!(shard_for(5 << 22, 4), 1);
    }
}
