//! Sending calls for real, with ureq.

use super::backend::{Answer, BackendError, CallBackend, CallKey};
use super::record::{CallFailure, FailureKind, Prepared, Response};
use std::io::ErrorKind;

/// Responses larger than this are refused (`too_large`): they would be stored whole.
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// Sends each call over HTTP(S). One agent, so connections are pooled across rows.
pub struct LiveBackend {
    agent: ureq::Agent,
}

impl Default for LiveBackend {
    fn default() -> Self {
        LiveBackend::new()
    }
}

impl LiveBackend {
    pub fn new() -> LiveBackend {
        let config = ureq::Agent::config_builder()
            // Statuses are answers to record and judge, not transport errors.
            .http_status_as_error(false)
            // A redirect would send a request other than the one recorded: the 3xx is
            // the answer.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(concat!("attest/", env!("CARGO_PKG_VERSION")))
            .max_idle_connections(256)
            .max_idle_connections_per_host(256)
            .build();
        LiveBackend {
            agent: config.into(),
        }
    }

    fn send(&self, p: &Prepared) -> Result<Response, CallFailure> {
        let invalid = |message: String| CallFailure {
            kind: FailureKind::InvalidRequest,
            message,
        };
        let mut builder = ureq::http::Request::builder()
            .method(p.request.method.as_str())
            .uri(p.request.url.as_str());
        for (k, v) in &p.request.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let body = p.body.clone().unwrap_or_default();
        let request = builder
            .body(body)
            .map_err(|e| invalid(format!("cannot build the request: {e}")))?;
        let request = self
            .agent
            .configure_request(request)
            .timeout_global(Some(p.request.timeout))
            .build();
        let mut response = self.agent.run(request).map_err(failure)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(failure)?;
        Ok(Response::new(status, headers, body))
    }
}

impl CallBackend for LiveBackend {
    fn perform(&self, _key: CallKey<'_>, request: &Prepared) -> Result<Answer, BackendError> {
        Ok(match self.send(request) {
            Ok(r) => Answer::Response(r),
            Err(f) => Answer::Failed(f),
        })
    }
}

/// Sorts a ureq error into the kinds the ledger records.
fn failure(e: ureq::Error) -> CallFailure {
    let kind = match &e {
        ureq::Error::Timeout(_) => FailureKind::Timeout,
        ureq::Error::Io(io) => match io.kind() {
            ErrorKind::ConnectionRefused => FailureKind::Refused,
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof => FailureKind::Reset,
            ErrorKind::TimedOut | ErrorKind::WouldBlock => FailureKind::Timeout,
            _ => FailureKind::Io,
        },
        ureq::Error::HostNotFound => FailureKind::Dns,
        ureq::Error::ConnectionFailed => FailureKind::Refused,
        ureq::Error::Protocol(_) => FailureKind::Protocol,
        ureq::Error::BodyExceedsLimit(_) | ureq::Error::LargeResponseHeader(..) => {
            FailureKind::TooLarge
        }
        ureq::Error::BadUri(_) | ureq::Error::Http(_) | ureq::Error::RequireHttpsOnly(_) => {
            FailureKind::InvalidRequest
        }
        ureq::Error::Tls(_) | ureq::Error::Pem(_) | ureq::Error::Rustls(_) => FailureKind::Tls,
        _ => FailureKind::Io,
    };
    CallFailure {
        kind,
        message: e.to_string(),
    }
}
