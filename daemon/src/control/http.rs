//! The optional HTTP interface (`[http] listen = "127.0.0.1:PORT"`, off by default).
//!
//! - `GET /status`: the JSON of `syncctl --json status`.
//! - `GET /metrics`: Prometheus text format (see [`crate::observe::metrics`]).
//! - `POST /pause`, `/resume`, `/resync`, `/retry-failed`, `/release-deletes` (query
//!   `target=NAME`, and `path=` for resync): only with a token configured (`token_file`), sent as `Authorization: Bearer
//!   TOKEN` and compared in constant time. Without one they answer 403.
//! - Listening beyond loopback with a token, `/status` and `/metrics` need it too (a Prometheus
//!   scrape sends it with `authorization: credentials_file:`); without a token there, the
//!   configuration's warning says so (`Config::warnings`).
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
    /// `/status` and `/metrics` need the token too (served beyond this host, with a token).
    pub guard_reads: bool,
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
        .route("/release-deletes", post(release_deletes))
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

async fn status(State(st): State<Arc<HttpState>>, headers: HeaderMap) -> HttpResponse {
    if let Some(r) = st.guard_reads.then(|| refused(&st, &headers)).flatten() {
        return r;
    }
    match answer(Request::Status, &st.shared).await {
        Response::Status(s) => Json(StatusView::of(&s)).into_response(),
        other => reply(other),
    }
}

async fn metrics(State(st): State<Arc<HttpState>>, headers: HeaderMap) -> HttpResponse {
    if let Some(r) = st.guard_reads.then(|| refused(&st, &headers)).flatten() {
        return r;
    }
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

async fn release_deletes(
    State(st): State<Arc<HttpState>>,
    headers: HeaderMap,
    Query(q): Query<Target>,
) -> HttpResponse {
    guarded(&st, &headers, Request::ReleaseDeletes { target: q.target }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::engine::EngineView;

    /// The HTTP face of a running generation; the temp dir holds its journal.
    fn state(token: Option<&str>) -> (HttpState, Arc<EngineView>, tempfile::TempDir) {
        let (f, v) = crate::control::tests::running();
        let st = HttpState {
            shared: Arc::new(f.shared),
            metrics: Metrics::new(),
            token: token.map(str::to_string),
            guard_reads: false,
        };
        (st, v, f.dir)
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn refusals_map_to_http_status_codes() {
        let code = |kind| {
            reply(Response::Error {
                kind,
                message: "m".into(),
            })
            .status()
        };
        assert_eq!(code(ErrorKind::UnknownTarget), StatusCode::NOT_FOUND);
        assert_eq!(code(ErrorKind::UnknownPath), StatusCode::NOT_FOUND);
        assert_eq!(code(ErrorKind::BadRequest), StatusCode::BAD_REQUEST);
        assert_eq!(code(ErrorKind::Config), StatusCode::BAD_REQUEST);
        assert_eq!(code(ErrorKind::Denied), StatusCode::FORBIDDEN);
        assert_eq!(code(ErrorKind::Internal), StatusCode::SERVICE_UNAVAILABLE);
        let ok = reply(Response::Done {
            message: "paused".into(),
        });
        assert_eq!(ok.status(), StatusCode::OK);
    }

    #[test]
    fn control_actions_need_the_configured_token() {
        let (off, _, _dir) = state(None);
        let r = refused(&off, &bearer("anything")).expect("refused without a token file");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let (on, _, _dir) = state(Some("s3cret"));
        for headers in [HeaderMap::new(), bearer("s3cre"), bearer("s3cret2")] {
            let r = refused(&on, &headers).expect("refused");
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        }
        assert!(refused(&on, &bearer("s3cret")).is_none());
    }

    #[tokio::test]
    async fn served_beyond_loopback_with_a_token_status_and_metrics_need_it_too() {
        let (st, _v, _dir) = state(Some("s3cret"));
        let open = Arc::new(st);
        assert_eq!(
            status(State(open.clone()), HeaderMap::new()).await.status(),
            StatusCode::OK
        );
        let (st, _v, _dir2) = state(Some("s3cret"));
        let guarded = Arc::new(HttpState {
            guard_reads: true,
            ..st
        });
        let g = || State(guarded.clone());
        assert_eq!(
            status(g(), HeaderMap::new()).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            metrics(g(), HeaderMap::new()).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(status(g(), bearer("s3cret")).await.status(), StatusCode::OK);
        assert_eq!(
            metrics(g(), bearer("s3cret")).await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn an_authorized_action_is_answered_by_the_control_code() {
        let (st, v, _dir) = state(Some("t"));
        let pause = || Request::Pause {
            target: Some("b2".into()),
        };
        let r = guarded(&st, &bearer("wrong"), pause()).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(
            !crate::control::tests::paused(&v, 1),
            "nothing done when refused"
        );
        let r = guarded(&st, &bearer("t"), pause()).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(crate::control::tests::paused(&v, 1));
    }
}
