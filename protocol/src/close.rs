//! WebSocket close codes (contract section 4) and what a client does on each.

/// Every close code the edge uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: normal closure.
    Normal,
    /// 1012: service restart (drain).
    Restart,
    /// 4000: malformed frame / protocol violation.
    ProtocolError,
    /// 4001: authentication failed.
    AuthFailed,
    /// 4002: no auth frame in time.
    AuthTimeout,
    /// 4003: token expired.
    TokenExpired,
    /// 4008: slow consumer, outbound buffer over its limit.
    SlowConsumer,
    /// 4029: rate or connection limit.
    RateLimited,
}

/// What the contract tells a client to do after a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientAction {
    Nothing,
    ReconnectResume,
    ReportAndBackoff,
    NewTokenFirst,
    Reconnect,
    NewTokenReconnectResume,
    ReconnectLaterBackoff,
}

impl CloseCode {
    pub const ALL: [CloseCode; 8] = [
        CloseCode::Normal,
        CloseCode::Restart,
        CloseCode::ProtocolError,
        CloseCode::AuthFailed,
        CloseCode::AuthTimeout,
        CloseCode::TokenExpired,
        CloseCode::SlowConsumer,
        CloseCode::RateLimited,
    ];

    pub const fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::Restart => 1012,
            CloseCode::ProtocolError => 4000,
            CloseCode::AuthFailed => 4001,
            CloseCode::AuthTimeout => 4002,
            CloseCode::TokenExpired => 4003,
            CloseCode::SlowConsumer => 4008,
            CloseCode::RateLimited => 4029,
        }
    }

    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The `code` string of the error frame sent just before this close.
    pub const fn error_code(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::Restart => "service_restart",
            CloseCode::ProtocolError => "protocol_error",
            CloseCode::AuthFailed => "auth_failed",
            CloseCode::AuthTimeout => "auth_timeout",
            CloseCode::TokenExpired => "token_expired",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::RateLimited => "rate_limited",
        }
    }

    pub const fn client_action(self) -> ClientAction {
        match self {
            CloseCode::Normal => ClientAction::Nothing,
            CloseCode::Restart => ClientAction::ReconnectResume,
            CloseCode::ProtocolError => ClientAction::ReportAndBackoff,
            CloseCode::AuthFailed => ClientAction::NewTokenFirst,
            CloseCode::AuthTimeout => ClientAction::Reconnect,
            CloseCode::TokenExpired => ClientAction::NewTokenReconnectResume,
            CloseCode::SlowConsumer => ClientAction::ReconnectResume,
            CloseCode::RateLimited => ClientAction::ReconnectLaterBackoff,
        }
    }
}

impl ClientAction {
    pub const fn as_str(self) -> &'static str {
        match self {
            ClientAction::Nothing => "nothing",
            ClientAction::ReconnectResume => "reconnect_resume",
            ClientAction::ReportAndBackoff => "report_backoff",
            ClientAction::NewTokenFirst => "new_token",
            ClientAction::Reconnect => "reconnect",
            ClientAction::NewTokenReconnectResume => "new_token_resume",
            ClientAction::ReconnectLaterBackoff => "backoff",
        }
    }
}
