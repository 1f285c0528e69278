//! Which guild, source address and endpoint each client gets. A pure
//! function of the client's index, so that the coordinator (which computes
//! the expected deliveries) and the workers (which connect) agree without
//! exchanging per-client tables.

use std::net::{Ipv4Addr, SocketAddr};

use crate::load::config::Dist;

/// Guild ids start here (valid snowflakes, easy to spot in logs).
pub const GUILD_BASE: u64 = 1_000_000;
/// User ids of the clients start here.
pub const USER_BASE: u64 = 10_000_000;

pub fn guild_id(index: usize) -> u64 {
    GUILD_BASE + index as u64
}

/// The simulator's load guild `index` (`voicewatch_tests::sim::load::guild_id`).
pub fn sim_guild_id(index: usize) -> u64 {
    crate::sim::load::guild_id(index as u32)
}

/// The index of a simulator load guild id.
pub fn sim_guild_index(id: u64) -> Option<usize> {
    (id & ((1 << 22) - 1) == 7)
        .then(|| (id >> 22).checked_sub(1))
        .flatten()
        .map(|i| i as usize)
}

pub fn guild_id_in(scheme: crate::load::config::GuildScheme, index: usize) -> u64 {
    match scheme {
        crate::load::config::GuildScheme::Harness => guild_id(index),
        crate::load::config::GuildScheme::Sim => sim_guild_id(index),
    }
}

pub fn user_id(client: usize) -> u64 {
    USER_BASE + client as u64
}

#[derive(Debug, Clone)]
pub struct Assignment {
    clients: usize,
    guilds: usize,
    /// Cumulative Zipf distribution over guilds; `None` for an even spread.
    cdf: Option<Vec<f64>>,
}

impl Assignment {
    pub fn new(clients: usize, guilds: usize, dist: Dist, zipf_s: f64) -> Self {
        let guilds = guilds.max(1);
        let cdf = match dist {
            Dist::Even => None,
            Dist::Zipf => {
                let weights: Vec<f64> = (1..=guilds)
                    .map(|k| 1.0 / (k as f64).powf(zipf_s))
                    .collect();
                let total: f64 = weights.iter().sum();
                let mut acc = 0.0;
                Some(
                    weights
                        .iter()
                        .map(|w| {
                            acc += w / total;
                            acc
                        })
                        .collect(),
                )
            }
        };
        Self {
            clients: clients.max(1),
            guilds,
            cdf,
        }
    }

    pub fn guilds(&self) -> usize {
        self.guilds
    }

    /// The guild index of client `i`. Zipf is applied by quantiles rather than
    /// by sampling, so every run of the same size is the same.
    pub fn guild_of(&self, i: usize) -> usize {
        match &self.cdf {
            None => i % self.guilds,
            Some(cdf) => {
                let q = (i as f64 + 0.5) / self.clients as f64;
                cdf.partition_point(|&c| c < q).min(self.guilds - 1)
            }
        }
    }

    /// Clients per guild index.
    pub fn counts(&self) -> Vec<u64> {
        let mut counts = vec![0u64; self.guilds];
        for i in 0..self.clients {
            counts[self.guild_of(i)] += 1;
        }
        counts
    }
}

/// The loopback source address of client `i`: one address per
/// `per_address` clients, so that no (source, destination) pair runs out of
/// ephemeral ports and per-IP limits see a realistic spread. 127.0.0.0/8 is
/// all loopback on Linux; 127.1.x.y keeps clear of 127.0.0.1.
pub fn source_addr(i: usize, per_address: usize) -> Ipv4Addr {
    let k = i / per_address.max(1);
    Ipv4Addr::new(127, 1, (k / 254 % 256) as u8, (k % 254 + 1) as u8)
}

/// The endpoint of client `i`: the harness's own round-robin.
pub fn endpoint_of(i: usize, endpoints: &[SocketAddr]) -> Option<SocketAddr> {
    if endpoints.is_empty() {
        None
    } else {
        endpoints.get(i % endpoints.len()).copied()
    }
}

/// How far client `i` moves along the endpoint list when its server ends
/// its session or refuses it (a load balancer routing around a dead node).
/// It depends on the client so that one server's clients spread evenly over
/// all the others: sending them all to one neighbour would push that
/// process past the 20,000 open files it may hold here.
pub fn failover_step(i: usize, endpoints: usize) -> usize {
    match endpoints {
        0 | 1 => 1,
        n => 1 + (i / n) % (n - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_spreads_one_servers_clients_over_all_the_others() {
        for n in 2..=6 {
            let mut landed = vec![0usize; n];
            // The clients of server 0 (round-robin: every n-th).
            for i in (0..n * 1200).step_by(n) {
                landed[(i % n + failover_step(i, n)) % n] += 1;
            }
            assert_eq!(landed[0], 0, "n={n}: {landed:?}");
            let per = 1200 / (n - 1);
            assert!(
                landed[1..].iter().all(|&k| k.abs_diff(per) <= 1),
                "n={n}: {landed:?}"
            );
        }
    }

    #[test]
    fn sim_guild_ids_round_trip() {
        for i in [0, 1, 999, 65_535] {
            assert_eq!(sim_guild_index(sim_guild_id(i)), Some(i));
        }
        assert_eq!(sim_guild_index(guild_id(3)), None);
    }

    #[test]
    fn even_spread_is_balanced() {
        let a = Assignment::new(1000, 10, Dist::Even, 1.0);
        assert!(a.counts().iter().all(|&c| c == 100));
    }

    #[test]
    fn zipf_makes_a_few_guilds_huge() {
        let a = Assignment::new(100_000, 1000, Dist::Zipf, 1.0);
        let c = a.counts();
        assert_eq!(c.iter().sum::<u64>(), 100_000);
        assert!(c[0] > 10_000, "{}", c[0]);
        assert!(c[0] > c[1] && c[1] > c[10] && c[10] > c[500]);
    }

    #[test]
    fn addresses_change_every_per_address_clients() {
        assert_eq!(source_addr(0, 5000), source_addr(4999, 5000));
        assert_ne!(source_addr(4999, 5000), source_addr(5000, 5000));
        assert_eq!(source_addr(0, 5000), Ipv4Addr::new(127, 1, 0, 1));
    }
}
