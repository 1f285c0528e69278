//! voicewatch-tests
pub mod load;
