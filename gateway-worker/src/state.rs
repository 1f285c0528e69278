//! Where a restarted worker finds each shard's session and voice map.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::tracker::Tracker;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSession {
    pub id: String,
    pub sequence: u64,
    pub resume_url: Option<String>,
}

/// One shard's saved state. The voice map is consistent with `session`'s
/// sequence: every dispatch up to it was applied (and handed to the bus).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardState {
    pub shard: u32,
    pub total: u32,
    pub session: Option<SavedSession>,
    pub tracker: Tracker,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("state encoding: {0}")]
    Json(#[from] serde_json::Error),
}

pub trait StateStore: Send + Sync + 'static {
    /// Every saved shard state (of any shard count: a changed count keeps
    /// the voice maps, not the sessions).
    fn load_all(&self) -> Result<Vec<ShardState>, StateError>;
    fn save(&self, state: &ShardState) -> Result<(), StateError>;
}

/// One JSON file per shard, written atomically (temp file + rename).
#[derive(Debug, Clone)]
pub struct FileStateStore {
    dir: PathBuf,
}

impl FileStateStore {
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, StateError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }
}

impl StateStore for FileStateStore {
    fn load_all(&self) -> Result<Vec<ShardState>, StateError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let is_shard = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("shard-") && n.ends_with(".json"));
            if !is_shard {
                continue;
            }
            match std::fs::read(&path)
                .map_err(StateError::from)
                .and_then(|b| Ok(serde_json::from_slice(&b)?))
            {
                Ok(s) => out.push(s),
                // A corrupt file costs a snapshot diff against nothing, not the worker.
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable shard state")
                }
            }
        }
        Ok(out)
    }

    fn save(&self, state: &ShardState) -> Result<(), StateError> {
        let name = format!("shard-{}-of-{}.json", state.shard, state.total);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(state)?)?;
        std::fs::rename(&tmp, self.dir.join(name))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStateStore::new(dir.path()).unwrap();
        let mut tracker = Tracker::new();
        tracker.guild_create(2000, [(1, 40, "a")]);
        let st = ShardState {
            shard: 0,
            total: 1,
            session: Some(SavedSession {
                id: "s".into(),
                sequence: 9,
                resume_url: Some("ws://x".into()),
            }),
            tracker,
        };
        store.save(&st).unwrap();
        std::fs::write(dir.path().join("shard-9-of-1.json"), b"{garbage").unwrap();
        assert_eq!(store.load_all().unwrap(), vec![st]);
    }
}
