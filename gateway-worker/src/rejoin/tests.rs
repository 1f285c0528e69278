use twilight_model::channel::permission_overwrite::PermissionOverwriteType;

use super::*;

const G: u64 = 2000;
const ROLE: u64 = 5000;

fn guild(everyone: Permissions, role: Permissions) -> GuildFacts {
    GuildFacts {
        owner_id: 1000,
        roles: vec![(G, everyone), (ROLE, role)],
    }
}

fn voice(overwrites: Vec<PermissionOverwrite>) -> ChannelFacts {
    ChannelFacts {
        guild_id: Some(G),
        kind: ChannelType::GuildVoice,
        user_limit: None,
        overwrites,
    }
}

fn ow(
    id: u64,
    kind: PermissionOverwriteType,
    allow: Permissions,
    deny: Permissions,
) -> PermissionOverwrite {
    PermissionOverwrite {
        id: Id::new(id),
        kind,
        allow,
        deny,
    }
}

const VC: Permissions = Permissions::VIEW_CHANNEL.union(Permissions::CONNECT);

#[test]
fn everyone_denied_connect_but_role_allowed() {
    let g = guild(VC, Permissions::empty());
    let ch = voice(vec![
        ow(
            G,
            PermissionOverwriteType::Role,
            Permissions::empty(),
            Permissions::CONNECT,
        ),
        ow(
            ROLE,
            PermissionOverwriteType::Role,
            Permissions::CONNECT,
            Permissions::empty(),
        ),
    ]);
    assert!(channel_permissions(G, 3001, &[ROLE], &g, &ch).contains(VC));
    assert!(!channel_permissions(G, 3002, &[], &g, &ch).contains(Permissions::CONNECT));
}

#[test]
fn member_overwrite_beats_role_overwrite() {
    let g = guild(VC, Permissions::empty());
    let ch = voice(vec![
        ow(
            ROLE,
            PermissionOverwriteType::Role,
            Permissions::CONNECT,
            Permissions::empty(),
        ),
        ow(
            3001,
            PermissionOverwriteType::Member,
            Permissions::empty(),
            Permissions::CONNECT,
        ),
    ]);
    assert!(!channel_permissions(G, 3001, &[ROLE], &g, &ch).contains(Permissions::CONNECT));
}

#[test]
fn owner_and_administrator_pass_any_overwrite() {
    let g = guild(Permissions::empty(), Permissions::ADMINISTRATOR);
    let ch = voice(vec![ow(
        G,
        PermissionOverwriteType::Role,
        Permissions::empty(),
        VC,
    )]);
    assert!(
        channel_permissions(G, 1000, &[], &g, &ch).contains(VC),
        "owner"
    );
    assert!(
        channel_permissions(G, 3001, &[ROLE], &g, &ch).contains(VC),
        "admin role"
    );
    assert!(!channel_permissions(G, 3002, &[], &g, &ch).contains(VC));
}

#[test]
fn unknown_member_roles_are_ignored() {
    let g = guild(Permissions::empty(), Permissions::empty());
    let ch = voice(Vec::new());
    assert!(channel_permissions(G, 3001, &[999], &g, &ch).is_empty());
}

#[test]
fn cache_expires_and_stays_bounded() {
    let mut c = OutcomeCache {
        ttl: Duration::from_millis(100),
        capacity: 2,
        entries: HashMap::new(),
    };
    let t0 = Instant::now();
    let o = RejoinOutcome::refused(RejoinError::ChannelFull);
    assert!(c.put((1, 1, 1), o.clone(), t0));
    assert!(c.put((2, 1, 1), o.clone(), t0));
    assert_eq!(
        c.get(&(1, 1, 1), t0 + Duration::from_millis(50)),
        Some(o.clone())
    );
    assert!(
        !c.put((3, 1, 1), o.clone(), t0 + Duration::from_millis(50)),
        "full of live entries"
    );
    assert_eq!(
        c.get(&(1, 1, 1), t0 + Duration::from_millis(150)),
        None,
        "expired"
    );
    assert!(
        c.put((3, 1, 1), o, t0 + Duration::from_millis(150)),
        "expired entries swept"
    );
    assert_eq!(c.entries.len(), 1);
}

#[tokio::test]
async fn api_url_override_is_split_for_twilight() {
    // Only checks that the accepted and refused forms are told apart; the
    // URL twilight builds is checked against the simulator.
    let t = Duration::from_secs(1);
    assert!(discord::build_client("t", Some("http://127.0.0.1:1"), t).is_ok());
    assert!(discord::build_client("t", Some("https://discord.com/api/v10/"), t).is_ok());
    assert!(discord::build_client("t", Some("127.0.0.1:1"), t).is_err());
    assert!(discord::build_client("t", Some("http://"), t).is_err());
    assert!(discord::build_client("t", None, t).is_ok());
}
