//! voicewatch-gateway-worker
pub mod rejoin;
