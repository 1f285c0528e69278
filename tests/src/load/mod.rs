//! The load harness behind the `voicewatch-load` binary.
//!
//! One coordinator process starts the system under test (a private
//! nats-server, optionally our edges), re-executes itself as worker
//! processes that each hold up to ~18,000 WebSocket clients (the machine
//! caps every process at 20,000 open files), drives signed events onto the
//! bus and collects what the workers saw. Workers talk to the coordinator
//! over their stdin (commands) and stdout (status lines), one JSON object a
//! line.
//!
//! Latency is measured with one clock: the publisher writes its
//! `CLOCK_MONOTONIC` nanoseconds into the event (`"lt"`, an unknown field the
//! edge passes through) and the receiving worker subtracts it from its own
//! reading of the same clock.

pub mod assign;
pub mod client;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod natsproto;
pub mod publisher;
pub mod report;
pub mod sut;
pub mod worker;
