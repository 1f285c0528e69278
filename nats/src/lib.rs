//! voicewatch-bus
