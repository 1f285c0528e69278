//! voicewatch-gateway-worker: twilight shards → voice-state tracking →
//! signed events on the bus, and the rejoin check. See README.md.

pub mod config;
pub mod metrics;
pub mod queue;
pub mod rejoin;
pub mod sink;
pub mod state;
pub mod tracker;
pub mod worker;

pub use config::Args;
pub use sink::BusSink;
pub use state::{FileStateStore, StateStore};
pub use worker::{
    Published, Sink, SinkError, Worker, WorkerError, WorkerHandle, install_crypto_provider, run,
};
