//! voicewatch-protocol
