//! The simulator satisfies an unmodified twilight shard.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use twilight_gateway::{
    ConfigBuilder, Event, EventTypeFlags, Intents, Shard, ShardId, StreamExt as _,
};
use voicewatch_gateway_worker::queue::SpacedQueue;
use voicewatch_tests::sim::{SimConfig, Simulator};

const T: Duration = Duration::from_secs(10);

async fn next(shard: &mut Shard<SpacedQueue>) -> Event {
    let ev = tokio::time::timeout(T, shard.next_event(EventTypeFlags::all()))
        .await
        .expect("timed out")
        .expect("stream open");
    ev.unwrap_or_else(|e| panic!("twilight could not read a simulator frame: {e}"))
}

async fn next_matching(shard: &mut Shard<SpacedQueue>, mut f: impl FnMut(&Event) -> bool) -> Event {
    loop {
        let ev = next(shard).await;
        if f(&ev) {
            return ev;
        }
    }
}

#[tokio::test]
async fn twilight_shard_runs_against_the_simulator() {
    voicewatch_gateway_worker::install_crypto_provider();
    let sim = Simulator::start(SimConfig {
        heartbeat_interval: Duration::from_millis(500),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    sim.add_simple_guild(2000, 4000, 2);
    sim.voice_update(2000, 3001, Some(4001)).unwrap();
    let config = ConfigBuilder::new(sim.token(), Intents::GUILDS | Intents::GUILD_VOICE_STATES)
        .proxy_url(sim.gateway_url())
        // Re-identify after 100 ms instead of Discord's 5 s.
        .queue(voicewatch_gateway_worker::queue::SpacedQueue::new(
            1,
            Duration::from_millis(100),
        ))
        .build();
    let mut shard = Shard::with_config(ShardId::ONE, config);

    let Event::Ready(ready) = next_matching(&mut shard, |e| matches!(e, Event::Ready(_))).await
    else {
        unreachable!()
    };
    assert_eq!(ready.guilds.len(), 1);
    assert!(ready.resume_gateway_url.ends_with("/resume"));
    let Event::GuildCreate(gc) = next(&mut shard).await else {
        panic!("GUILD_CREATE expected")
    };
    let twilight_model::gateway::payload::incoming::GuildCreate::Available(g) = *gc else {
        panic!("available")
    };
    assert_eq!(g.voice_states.len(), 1);
    assert_eq!(g.channels.len(), 3);
    assert_eq!(g.roles.len(), 1);
    assert_eq!(g.members.len(), 2);

    // A voice change, then heartbeats and an op 1.
    sim.voice_update(2000, 3001, None).unwrap();
    let Event::VoiceStateUpdate(v) = next(&mut shard).await else {
        panic!("VOICE_STATE_UPDATE expected")
    };
    assert_eq!(v.guild_id.map(|g| g.get()), Some(2000));
    assert_eq!(v.channel_id, None);
    sim.request_heartbeat();
    next_matching(&mut shard, |e| matches!(e, Event::GatewayHeartbeatAck)).await;

    // op 7: twilight resumes at the resume URL; a change made meanwhile is replayed.
    sim.op7();
    sim.voice_update(2000, 3002, Some(4002)).unwrap();
    let mut got_update = false;
    loop {
        match next(&mut shard).await {
            Event::VoiceStateUpdate(v) if v.user_id.get() == 3002 => got_update = true,
            Event::Resumed => break,
            _ => {}
        }
    }
    assert!(got_update, "replayed before RESUMED");
    assert_eq!(sim.stats().resumes_ok, 1);

    // Zombie: no ACKs; twilight notices within a heartbeat interval and resumes.
    sim.zombie();
    next_matching(&mut shard, |e| matches!(e, Event::GatewayClose(_))).await;
    next_matching(&mut shard, |e| matches!(e, Event::Resumed)).await;
    assert_eq!(sim.stats().resumes_ok, 2);

    // 4009: the RESUME is refused with op 9 false, twilight identifies again.
    sim.close(4009);
    next_matching(&mut shard, |e| {
        matches!(e, Event::GatewayInvalidateSession(false))
    })
    .await;
    next_matching(&mut shard, |e| matches!(e, Event::Ready(_))).await;
    let s = sim.stats();
    assert_eq!(s.identifies, 2);
    assert_eq!(s.resumes_refused, 1);

    // Fatal close: no reconnect.
    sim.close(4004);
    next_matching(
        &mut shard,
        |e| matches!(e, Event::GatewayClose(Some(f)) if f.code == 4004),
    )
    .await;
    let end = tokio::time::timeout(T, shard.next_event(EventTypeFlags::all()))
        .await
        .expect("timed out");
    assert!(end.is_none(), "fatally closed");
}

#[tokio::test]
async fn gateway_bot_answers_recommendation() {
    let sim = Simulator::start(SimConfig {
        recommended_shards: 3,
        max_concurrency: 2,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    voicewatch_gateway_worker::install_crypto_provider();
    let host = sim.api_url().trim_start_matches("http://").to_owned();
    let client = twilight_http::Client::builder()
        .token(sim.token())
        .proxy(host, true)
        .build();
    let info = client
        .gateway()
        .authed()
        .await
        .unwrap()
        .model()
        .await
        .unwrap();
    assert_eq!(info.shards, 3);
    assert_eq!(info.session_start_limit.max_concurrency, 2);
}
