//! Load mode: many guilds and users, and a steady rate of voice changes, so
//! that the worker can be measured. Every change is effective (a join, a move
//! to another channel or a leave), so a correct worker publishes exactly one
//! event per change.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::model::Guild;
use super::{Simulator, VoiceState};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LoadConfig {
    pub guilds: u32,
    pub users: u32,
    pub voice_channels: u32,
    /// Share of users in voice when the guilds are created.
    pub initial_in_voice: f64,
    /// Voice changes per second.
    pub rate: u32,
    pub duration_secs: f64,
    pub seed: u64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            guilds: 1_000,
            users: 50_000,
            voice_channels: 5,
            initial_in_voice: 0.3,
            rate: 2_000,
            duration_secs: 60.0,
            seed: 7,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    pub changes: u64,
    pub joins: u64,
    pub moves: u64,
    pub leaves: u64,
    pub elapsed_ms: u64,
}

/// Guild `i` of the load set. Ids spread over shards like Discord's do
/// (`(id >> 22) % shards`).
pub fn guild_id(i: u32) -> u64 {
    ((u64::from(i) + 1) << 22) | 7
}

pub fn user_id(j: u32) -> u64 {
    2_000_000_000 + u64::from(j)
}

/// Create the load guilds with their members and initial voice states.
pub fn populate(sim: &Simulator, cfg: &LoadConfig) {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let guilds = cfg.guilds.max(1);
    let mut all: Vec<Guild> = (0..guilds)
        .map(|i| {
            Guild::new(
                guild_id(i),
                user_id(0),
                1_000_000_000 + u64::from(i) * 100,
                cfg.voice_channels.max(2),
            )
        })
        .collect();
    for j in 0..cfg.users {
        let g = &mut all[(j % guilds) as usize];
        let u = user_id(j);
        g.members.entry(u).or_insert_with(|| super::Member {
            user_id: u,
            roles: Vec::new(),
        });
        if rng.random_bool(cfg.initial_in_voice.clamp(0.0, 1.0)) {
            let chans = g.voice_channel_ids();
            let c = chans[rng.random_range(0..chans.len())];
            g.voice.insert(
                u,
                VoiceState {
                    channel_id: c,
                    session_id: format!("init-{j}"),
                },
            );
        }
    }
    for g in all {
        sim.add_guild(g);
    }
}

/// Drive `cfg.rate` changes per second for `cfg.duration_secs` over the
/// guilds created by [`populate`].
pub async fn run(sim: &Simulator, cfg: &LoadConfig) -> LoadReport {
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_add(1));
    let guilds = cfg.guilds.max(1);
    let per_guild: Vec<(u64, Vec<u64>, Vec<u64>)> = (0..guilds)
        .filter_map(|i| {
            let g = sim.guild(guild_id(i))?;
            let users: Vec<u64> = g
                .members
                .keys()
                .copied()
                .filter(|u| *u != g.owner_id)
                .collect();
            (!users.is_empty()).then(|| (g.id, users, g.voice_channel_ids()))
        })
        .collect();
    let mut report = LoadReport::default();
    if per_guild.is_empty() {
        return report;
    }
    let start = Instant::now();
    let total = (f64::from(cfg.rate) * cfg.duration_secs) as u64;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while report.changes < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * f64::from(cfg.rate)) as u64).min(total);
        if due <= report.changes {
            continue;
        }
        sim.inner().with(|st| {
            while report.changes < due {
                let (g, users, chans) = &per_guild[rng.random_range(0..per_guild.len())];
                let u = users[rng.random_range(0..users.len())];
                let current = st
                    .guilds
                    .get(g)
                    .and_then(|g| g.voice.get(&u))
                    .map(|v| v.channel_id);
                let next = match current {
                    None => {
                        report.joins += 1;
                        Some(chans[rng.random_range(0..chans.len())])
                    }
                    Some(c) if rng.random_bool(0.5) => {
                        report.moves += 1;
                        let others: Vec<u64> = chans.iter().copied().filter(|x| *x != c).collect();
                        Some(others[rng.random_range(0..others.len())])
                    }
                    Some(_) => {
                        report.leaves += 1;
                        None
                    }
                };
                let _ = st.voice_update(*g, u, next);
                report.changes += 1;
            }
        });
    }
    report.elapsed_ms = start.elapsed().as_millis() as u64;
    report
}
