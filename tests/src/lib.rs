//! voicewatch-tests: the Discord simulator, shared test helpers and the load
//! harness. End-to-end tests live in `tests/`.

pub mod harness;
pub mod load;
pub mod sim;
