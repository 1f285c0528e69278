//! voicewatch-tests
