//! voicewatch-ws-edge
pub mod rejoin;
