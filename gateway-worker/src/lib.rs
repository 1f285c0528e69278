//! voicewatch-gateway-worker
