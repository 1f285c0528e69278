//! voicewatch-gateway-worker: twilight shards → voice-state tracking →
//! signed events on the bus.

pub mod tracker;
