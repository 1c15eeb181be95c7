//! The optional HTTP interface (`[http] listen = "127.0.0.1:PORT"`, off by default).
//!
//! - `GET /status`: the JSON of `syncctl --json status`.
//! - `GET /metrics`: Prometheus text format (see [`crate::observe::metrics`]).
//! - `POST /pause`, `/resume`, `/resync`, `/retry-failed` (query `target=NAME`, and `path=` for
//!   resync): only with a token configured (`token_file`), sent as `Authorization: Bearer
//!   TOKEN` and compared in constant time. Without one they answer 403.
//!
//! Every request is answered by the same code as the control socket's.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use syncd_proto::json::{Outcome, StatusView};
use syncd_proto::{ByteBuf, ErrorKind, Request, Response};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::control::{answer, Shared};
use crate::observe::metrics::Metrics;

/// What the handlers share.
pub struct HttpState {
    pub shared: Arc<Shared>,
    pub metrics: Arc<Metrics>,
    /// The control token; `None`: control actions are off.
    pub token: Option<String>,
}

/// Serve until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<HttpState>,
    stop: CancellationToken,
) {
    let app = Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .route("/resync", post(resync))
        .route("/retry-failed", post(retry_failed))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        warn!(error = %e, "HTTP server failed");
    }
}

/// A control-socket answer as an HTTP response.
fn reply(resp: Response) -> HttpResponse {
    match resp {
        Response::Done { message } => Json(Outcome::done(&message)).into_response(),
        Response::Error { kind, message } => {
            let code = match kind {
                ErrorKind::UnknownTarget | ErrorKind::UnknownPath => StatusCode::NOT_FOUND,
                ErrorKind::BadRequest | ErrorKind::ProtocolMismatch | ErrorKind::Config => {
                    StatusCode::BAD_REQUEST
                }
                ErrorKind::Denied => StatusCode::FORBIDDEN,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            (code, Json(Outcome::failed(&message))).into_response()
        }
        other => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected answer: {other:?}"),
        )
            .into_response(),
    }
}

async fn status(State(st): State<Arc<HttpState>>) -> HttpResponse {
    match answer(Request::Status, &st.shared).await {
        Response::Status(s) => Json(StatusView::of(&s)).into_response(),
        other => reply(other),
    }
}

async fn metrics(State(st): State<Arc<HttpState>>) -> HttpResponse {
    match answer(Request::Status, &st.shared).await {
        Response::Status(s) => {
            let size = st.shared.journal.size_on_disk().unwrap_or(0);
            (
                [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
                st.metrics.render(&s, size),
            )
                .into_response()
        }
        other => reply(other),
    }
}

/// `None` when the request carries the configured token; else the refusal.
fn refused(st: &HttpState, headers: &HeaderMap) -> Option<HttpResponse> {
    let Some(token) = &st.token else {
        return Some(
            (
                StatusCode::FORBIDDEN,
                Json(Outcome::failed(
                    "control over HTTP is off: set token_file in [http] to allow it",
                )),
            )
                .into_response(),
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or(b"");
    if bool::from(given.ct_eq(token.as_bytes())) {
        None
    } else {
        Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(Outcome::failed(
                    "missing or wrong token (Authorization: Bearer TOKEN)",
                )),
            )
                .into_response(),
        )
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Target {
    target: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResyncQuery {
    target: Option<String>,
    path: Option<String>,
}

/// A control action: carried out only for a request with the token.
async fn guarded(st: &HttpState, headers: &HeaderMap, req: Request) -> HttpResponse {
    match refused(st, headers) {
        Some(r) => r,
        None => reply(answer(req, &st.shared).await),
    }
}

async fn pause(
    State(st): State<Arc<HttpState>>,
    headers: HeaderMap,
    Query(q): Query<Target>,
) -> HttpResponse {
    guarded(&st, &headers, Request::Pause { target: q.target }).await
}

async fn resume(
    State(st): State<Arc<HttpState>>,
    headers: HeaderMap,
    Query(q): Query<Target>,
) -> HttpResponse {
    guarded(&st, &headers, Request::Resume { target: q.target }).await
}

async fn resync(
    State(st): State<Arc<HttpState>>,
    headers: HeaderMap,
    Query(q): Query<ResyncQuery>,
) -> HttpResponse {
    let req = Request::Resync {
        target: q.target,
        path: q.path.map(|p| ByteBuf::from(p.into_bytes())),
    };
    guarded(&st, &headers, req).await
}

async fn retry_failed(
    State(st): State<Arc<HttpState>>,
    headers: HeaderMap,
    Query(q): Query<Target>,
) -> HttpResponse {
    guarded(&st, &headers, Request::RetryFailed { target: q.target }).await
}
