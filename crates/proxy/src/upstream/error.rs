//! How an exchange with an upstream failed, classified where it happened: how far the
//! request got (which the retry rule needs: a request that never left may go anywhere), and
//! the kind of failure, for metrics and for the answer the client gets.

use super::connect::ConnectError;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The kinds of upstream failure the metrics count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamErrorKind {
    Refused,
    Timeout,
    Reset,
    Tls,
    Other,
}

/// Why one attempt got no response from its endpoint.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No connection could be made: nothing of the request left Vestibule.
    #[error("connecting: {0}")]
    Connect(#[from] ConnectError),
    /// The request went (or may have), but its response head did not begin within the read
    /// timeout, or the upstream stopped taking the body for the send timeout.
    #[error("no answer in time")]
    TimedOut,
    /// The exchange broke after the request (may have) left: a reset, a close, a response
    /// that is not HTTP.
    #[error("{0}")]
    Failed(BoxError),
    /// The request cannot be sent in the form this backend takes; nothing left.
    #[error("{0}")]
    Unsendable(&'static str),
}

impl UpstreamError {
    /// Whether any of the request may have reached the upstream: only then can repeating it
    /// elsewhere do its work twice.
    pub(crate) fn may_have_reached(&self) -> bool {
        matches!(self, UpstreamError::TimedOut | UpstreamError::Failed(_))
    }

    /// A timeout, connecting or waiting for the answer (nginx's `timeout` condition), as
    /// opposed to an error (its `error` condition).
    pub(crate) fn is_timeout(&self) -> bool {
        match self {
            UpstreamError::Connect(e) => e.is_timeout(),
            UpstreamError::TimedOut => true,
            UpstreamError::Failed(_) | UpstreamError::Unsendable(_) => false,
        }
    }

    /// What the metrics count it as; `None` for a request that could not be sent at all,
    /// which is the request's fault rather than the upstream's.
    pub(crate) fn kind(&self) -> Option<UpstreamErrorKind> {
        Some(match self {
            UpstreamError::Connect(ConnectError::Refused) => UpstreamErrorKind::Refused,
            UpstreamError::Connect(ConnectError::TimedOut(_)) | UpstreamError::TimedOut => {
                UpstreamErrorKind::Timeout
            }
            UpstreamError::Connect(ConnectError::Tls(_) | ConnectError::ServerName(_)) => {
                UpstreamErrorKind::Tls
            }
            UpstreamError::Connect(ConnectError::Io(_) | ConnectError::Handshake(_)) => {
                UpstreamErrorKind::Other
            }
            UpstreamError::Failed(_) => UpstreamErrorKind::Reset,
            UpstreamError::Unsendable(_) => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_failures_after_the_request_left_may_have_reached_the_upstream() {
        let cases: [(UpstreamError, bool, bool, Option<UpstreamErrorKind>); 6] = [
            (
                ConnectError::Refused.into(),
                false,
                false,
                Some(UpstreamErrorKind::Refused),
            ),
            (
                ConnectError::TimedOut(Duration::from_secs(5)).into(),
                false,
                true,
                Some(UpstreamErrorKind::Timeout),
            ),
            (
                ConnectError::ServerName("x y".into()).into(),
                false,
                false,
                Some(UpstreamErrorKind::Tls),
            ),
            (
                UpstreamError::TimedOut,
                true,
                true,
                Some(UpstreamErrorKind::Timeout),
            ),
            (
                UpstreamError::Failed("reset".into()),
                true,
                false,
                Some(UpstreamErrorKind::Reset),
            ),
            (UpstreamError::Unsendable("no"), false, false, None),
        ];
        for (error, reached, timeout, kind) in cases {
            assert_eq!(error.may_have_reached(), reached, "{error}");
            assert_eq!(error.is_timeout(), timeout, "{error}");
            assert_eq!(error.kind(), kind, "{error}");
        }
    }
}
