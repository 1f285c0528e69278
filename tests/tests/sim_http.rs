//! The simulator's HTTP control surface (used by `voicewatch simulate` and
//! the demo) and its REST answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use voicewatch_tests::sim::{SimConfig, Simulator};

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn control_surface() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let base = sim.api_url();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let req = http.post(format!("{base}{path}")).json(&body);
        async move { tokio::time::timeout(T, req.send()).await.unwrap().unwrap() }
    };
    let r = post(
        "/control/guilds",
        json!({"guildId": "2000", "firstChannelId": "4000", "voiceChannels": 2}),
    )
    .await;
    assert_eq!(r.status(), 204);
    let r = post(
        "/control/voice",
        json!({"guildId": "2000", "userId": "3001", "channelId": "4001"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap()["sessionId"].is_string());
    let map: Value = http
        .get(format!("{base}/control/guilds/2000/voice"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(map, json!({"3001": "4001"}));
    let r = post(
        "/control/voice",
        json!({"guildId": "2000", "userId": "3001", "channelId": null}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(sim.voice_state(2000).len(), 0);
    assert_eq!(
        post(
            "/control/voice",
            json!({"guildId": "0", "userId": "1", "channelId": null})
        )
        .await
        .status(),
        400
    );
    assert_eq!(
        post(
            "/control/voice",
            json!({"guildId": "7", "userId": "1", "channelId": null})
        )
        .await
        .status(),
        404
    );
    assert_eq!(
        post("/control/outage/2000", json!(null)).await.status(),
        204
    );
    assert!(sim.guild(2000).unwrap().unavailable);
    assert_eq!(
        post("/control/restore/2000", json!(null)).await.status(),
        204
    );
    for path in [
        "/control/op7",
        "/control/op9?resumable=false",
        "/control/close?code=4000",
        "/control/disconnect",
        "/control/zombie",
    ] {
        assert_eq!(post(path, json!(null)).await.status(), 204, "{path}");
    }
    let stats: Value = http
        .get(format!("{base}/control/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["connections"], 0);

    // REST: the recommendation needs the bot token.
    let r = http
        .get(format!("{base}/api/v10/gateway/bot"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{base}/api/v10/gateway/bot"))
        .header("authorization", format!("Bot {}", sim.token()))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["shards"], 1);
    assert_eq!(v["url"], sim.gateway_url());
}
