//! Whether an attempt that failed (or answered with a status the route retries on) is tried
//! again on another endpoint: ingress-nginx's `proxy-next-upstream` conditions, the attempts
//! and endpoints left, and whether the request can be sent again at all. Pure: the request
//! path states the facts, this decides.

use vestibule_model::NextUpstream;

/// How an attempt ended, as far as retrying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// No response. `reached`: any of the request may have reached the upstream (it had
    /// connected); `timeout`: it timed out rather than failed (nginx's `timeout` condition
    /// rather than `error`).
    Failed { reached: bool, timeout: bool },
    /// The upstream answered with this status.
    Answered(u16),
}

/// What the decision needs to know of the request and its attempts so far.
#[derive(Debug, Clone, Copy)]
pub(super) struct Facts {
    /// The route's `proxy-next-upstream` conditions.
    pub(super) conditions: NextUpstream,
    /// Every attempt can send the request alike: it has no body (or a tunnel's).
    pub(super) replayable: bool,
    /// A method nginx repeats on another upstream once it may have had an effect.
    pub(super) idempotent: bool,
    /// Another attempt may start: fewer tries than `proxy-next-upstream-tries` made, and
    /// `proxy-next-upstream-timeout` not passed.
    pub(super) attempts_left: bool,
    /// The cluster has endpoints this request has not tried.
    pub(super) endpoints_left: bool,
}

/// Whether to try another endpoint.
pub(super) fn again(outcome: Outcome, facts: &Facts) -> bool {
    let conditions = &facts.conditions;
    let wanted = match outcome {
        Outcome::Failed { timeout: true, .. } => conditions.timeout,
        Outcome::Failed { timeout: false, .. } => conditions.error,
        Outcome::Answered(status) => conditions.on_status(status),
    };
    // Nothing of a request that never connected left Vestibule: it may go anywhere. Once it
    // may have reached an upstream, only one that can be sent again alike, with a method
    // that may be repeated (or `non_idempotent`), goes again.
    let repeatable = match outcome {
        Outcome::Failed { reached: false, .. } => true,
        _ => facts.replayable && (facts.idempotent || conditions.non_idempotent),
    };
    wanted && repeatable && facts.attempts_left && facts.endpoints_left
}

/// Methods nginx repeats on another upstream (it never repeats POST, LOCK or PATCH).
pub(super) fn is_idempotent(method: &http::Method) -> bool {
    !matches!(method.as_str(), "POST" | "LOCK" | "PATCH")
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::{Answered, Failed};

    const REFUSED: Outcome = Failed {
        reached: false,
        timeout: false,
    };
    const CONNECT_TIMEOUT: Outcome = Failed {
        reached: false,
        timeout: true,
    };
    const RESET: Outcome = Failed {
        reached: true,
        timeout: false,
    };
    const READ_TIMEOUT: Outcome = Failed {
        reached: true,
        timeout: true,
    };

    /// The default conditions (`error timeout`), a GET without a body, with tries and
    /// endpoints left; each case changes what it names.
    fn facts() -> Facts {
        Facts {
            conditions: NextUpstream::default(),
            replayable: true,
            idempotent: true,
            attempts_left: true,
            endpoints_left: true,
        }
    }

    fn with_502() -> NextUpstream {
        NextUpstream {
            http_502: true,
            ..NextUpstream::default()
        }
    }

    #[test]
    fn retries_follow_nginx_next_upstream() {
        let post_with_body = Facts {
            replayable: false,
            idempotent: false,
            ..facts()
        };
        let post_without_body = Facts {
            idempotent: false,
            ..facts()
        };
        let cases: [(&str, Outcome, Facts, bool); 17] = [
            (
                "a refused connection goes elsewhere",
                REFUSED,
                facts(),
                true,
            ),
            (
                "a connect timeout goes elsewhere",
                CONNECT_TIMEOUT,
                facts(),
                true,
            ),
            ("a reset after sending", RESET, facts(), true),
            ("a read timeout", READ_TIMEOUT, facts(), true),
            (
                "nothing left Vestibule: even a POST with a body goes elsewhere",
                REFUSED,
                post_with_body,
                true,
            ),
            (
                "a body that may have left is not sent twice",
                RESET,
                post_with_body,
                false,
            ),
            (
                "a POST that may have arrived is not repeated",
                RESET,
                post_without_body,
                false,
            ),
            (
                "unless non_idempotent says so",
                RESET,
                Facts {
                    conditions: NextUpstream {
                        non_idempotent: true,
                        ..NextUpstream::default()
                    },
                    ..post_without_body
                },
                true,
            ),
            (
                "off: never",
                REFUSED,
                Facts {
                    conditions: NextUpstream::off(),
                    ..facts()
                },
                false,
            ),
            (
                "timeout alone: errors stop",
                REFUSED,
                Facts {
                    conditions: NextUpstream {
                        error: false,
                        ..NextUpstream::default()
                    },
                    ..facts()
                },
                false,
            ),
            (
                "error alone: timeouts stop",
                READ_TIMEOUT,
                Facts {
                    conditions: NextUpstream {
                        timeout: false,
                        ..NextUpstream::default()
                    },
                    ..facts()
                },
                false,
            ),
            (
                "a 502 is passed on by default",
                Answered(502),
                facts(),
                false,
            ),
            (
                "http_502 tries another",
                Answered(502),
                Facts {
                    conditions: with_502(),
                    ..facts()
                },
                true,
            ),
            (
                "but not for a POST",
                Answered(502),
                Facts {
                    conditions: with_502(),
                    ..post_without_body
                },
                false,
            ),
            (
                "no tries left",
                REFUSED,
                Facts {
                    attempts_left: false,
                    ..facts()
                },
                false,
            ),
            (
                "no endpoints left",
                Answered(502),
                Facts {
                    conditions: with_502(),
                    endpoints_left: false,
                    ..facts()
                },
                false,
            ),
            ("a 200 is the answer", Answered(200), facts(), false),
        ];
        for (name, outcome, facts, expected) in cases {
            assert_eq!(again(outcome, &facts), expected, "{name}");
        }
    }

    #[test]
    fn nginx_never_repeats_post_lock_or_patch() {
        for (method, idempotent) in [
            ("GET", true),
            ("HEAD", true),
            ("PUT", true),
            ("DELETE", true),
            ("OPTIONS", true),
            ("POST", false),
            ("LOCK", false),
            ("PATCH", false),
        ] {
            let method = http::Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(is_idempotent(&method), idempotent, "{method}");
        }
    }
}
