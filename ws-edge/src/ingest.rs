//! `POST /api/internal/events` (contract section 3): other producers hand
//! one signed event to the edge, which verifies it and publishes it on the
//! bus exactly as signed.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use voicewatch_protocol::signing::{HEADER_KEY_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use voicewatch_protocol::{SignedEvent, Stamp, Subject, VoiceEvent};

use crate::hub::now_ms;
use crate::state::EdgeState;

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn answer(st: &EdgeState, status: StatusCode, body: serde_json::Value) -> Response {
    st.metrics
        .ingest
        .get_or_create(&[("status", status.as_u16())])
        .inc();
    (status, Json(body)).into_response()
}

pub(crate) async fn ingest(
    State(st): State<Arc<EdgeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let stamp = Stamp {
        timestamp: header(&headers, HEADER_TIMESTAMP).unwrap_or_default(),
        key_id: header(&headers, HEADER_KEY_ID),
        signature: header(&headers, HEADER_SIGNATURE).unwrap_or_default(),
    };
    // The signature first: an unauthenticated caller learns nothing about
    // what a valid event looks like.
    if let Err(e) = st.keyring.verify(
        &stamp,
        &body,
        Some(now_ms()),
        st.args.signature_tolerance_ms,
    ) {
        return answer(
            &st,
            StatusCode::UNAUTHORIZED,
            json!({"error": "unauthorized", "message": e.to_string()}),
        );
    }
    let event = match VoiceEvent::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            return answer(
                &st,
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_event", "message": e.to_string()}),
            );
        }
    };
    let signed = SignedEvent {
        subject: Subject::new(event.guild_id, event.kind),
        id: event.id.as_str().to_owned(),
        payload: body,
        stamp,
    };
    match st.bus.publish(&signed).await {
        Ok(_) => answer(&st, StatusCode::ACCEPTED, json!({"id": event.id.as_str()})),
        Err(e) => answer(
            &st,
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "unavailable", "message": e.to_string()}),
        ),
    }
}

/// Axum answers an over-limit body with a plain 413; give it the same JSON
/// shape and count it.
pub(crate) async fn count_413(
    State(st): State<Arc<EdgeState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let r = next.run(req).await;
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return answer(
            &st,
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "too_large", "message": format!("body over {} bytes", st.args.ingest_max_bytes)}),
        );
    }
    r
}
