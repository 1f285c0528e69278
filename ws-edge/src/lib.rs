//! voicewatch-ws-edge
