//! Sending a request with retries: an endpoint picked for each attempt, the request handed to
//! the upstream layer, the endpoint's health and response time noted, and the retry rule asked
//! whether a failure (or a status the route retries on) goes to another endpoint.
//!
//! One async function holds the loop, and what each attempt decides before and after it
//! waits is plain code: every async frame between a request and its upstream is one more
//! state the request's future carries and moves.

use std::sync::atomic::Ordering;
use std::time::Instant;

use http::{HeaderValue, Response};
use tracing::debug;
use vestibule_model::{ClusterId, EndpointAddress};

use super::pick::{Balancing, Chosen};
use super::retry::{self, Facts, Outcome};
use super::rewrite::Rewritten;
use super::route::Routed;
use crate::balance::{self, EndpointStats};
use crate::body::request::Progress;
use crate::observe::record::{Attempt, Attempts};
use crate::respond::ProxyError;
use crate::upstream::client::{Sent as Exchanged, Target, Timeouts, Upstreams};
use crate::upstream::error::UpstreamError;
use crate::upstream::response::ResponseBody;

/// What came of sending a request: the response to pass on, or why there is none; every
/// attempt made; and a new affinity cookie for the client.
pub(super) struct Sent {
    pub(super) result: Result<Response<ResponseBody>, ProxyError>,
    pub(super) attempts: Attempts,
    pub(super) set_cookie: Option<HeaderValue>,
}

/// How one attempt ended.
enum Step {
    /// The request's answer, whatever earlier attempts got.
    Done(Result<Response<ResponseBody>, ProxyError>),
    /// No more attempts: a response an earlier attempt got is passed on, else this error.
    Stop(ProxyError),
    /// Try another endpoint; the response, when one came, is passed on if none does better.
    Again(Option<Response<ResponseBody>>, Option<ProxyError>),
}

/// Sends `rewritten` to the side of `routed` the pick `chosen`, trying other endpoints as the
/// route's retry policy allows.
pub(super) async fn with_retries(
    upstreams: &Upstreams,
    routed: &Routed,
    chosen: Chosen,
    rewritten: &mut Rewritten<'_>,
    balancing: Balancing<'_>,
) -> Sent {
    let state = routed.state();
    let policy = &*state.proxy;
    let mut sending = Sending::new(
        routed,
        rewritten.progress.as_deref(),
        rewritten.replayable,
        retry::is_idempotent(&rewritten.outgoing.request().method),
    );
    let cluster = chosen.cluster;
    let Some(upstream) = routed.upstream(chosen.canary, chosen.fallback) else {
        // A route is picked only with a cluster, and each such route has its upstream.
        let reason = "the route has no upstream settings";
        return sending.sent(Err(ProxyError::BackendUnavailable(reason.into())));
    };
    let timeouts = Timeouts::of(policy);
    // A pooled connection found closed as the request arrived: the request goes once more on
    // a new one when it may be repeated.
    let resend = sending.facts.replayable
        && (sending.facts.idempotent || policy.next_upstream.non_idempotent);
    let endpoints = &routed.runtime.table.cluster(cluster).endpoints;
    for attempt in 1..=sending.tries {
        // One clock reading for the pick, the connect time and (on a pooled connection) the
        // upstream's response time.
        let started = Instant::now();
        let Some(pick) = balancing.next(&sending.tried, started) else {
            break;
        };
        if pick.set_cookie.is_some() {
            sending.set_cookie = pick.set_cookie;
        }
        sending.tried.push(pick.index);
        sending.facts.endpoints_left = sending.tried.len() < endpoints.len();
        let endpoint = &endpoints[pick.index].address;
        let target = Target {
            endpoint,
            protocol: upstream.protocol,
            tls: upstream.tls.as_ref(),
        };
        let stats = balancing.balancer().stats(pick.index);
        let in_flight = stats.ewma.start();
        let progress = rewritten.progress.as_deref();
        let outgoing = &mut rewritten.outgoing;
        let body = &mut rewritten.body;
        let exchanged = upstreams
            .send(&target, outgoing, body, progress, timeouts, resend)
            .await;
        let now = Instant::now();
        // No sample for an endpoint that could not be reached (it would look fast), nor for
        // a request that never went.
        match &exchanged.result {
            Err(UpstreamError::Connect(_) | UpstreamError::Unsendable(_)) => drop(in_flight),
            _ => in_flight.finish(balance::nanos_at(now), now - started),
        }
        sending.facts.attempts_left =
            attempt < sending.tries && sending.deadline.is_none_or(|deadline| now < deadline);
        let at = (pick.index, endpoint, &**stats);
        match sending.settle(exchanged, at, started, now) {
            Step::Done(result) => return sending.sent(result),
            Step::Stop(error) => {
                sending.last_error = Some(error);
                break;
            }
            Step::Again(response, error) => {
                sending.fallback = response.or(sending.fallback.take());
                sending.last_error = error.or(sending.last_error.take());
            }
        }
    }
    sending.exhausted(cluster)
}

/// One request's way through its attempts.
struct Sending<'a> {
    routed: &'a Routed,
    /// How the client's body is going, when it has one.
    progress: Option<&'a Progress>,
    /// What the retry rule is told of the request; the attempts' part is filled in per try.
    facts: Facts,
    /// Attempts in all (`proxy-next-upstream-tries`), and when none may start any more
    /// (`proxy-next-upstream-timeout`).
    tries: u32,
    deadline: Option<Instant>,
    attempts: Attempts,
    /// The endpoints tried, in order: nearly always one, seldom more than a few.
    tried: smallvec::SmallVec<[usize; 4]>,
    fallback: Option<Response<ResponseBody>>,
    last_error: Option<ProxyError>,
    set_cookie: Option<HeaderValue>,
}

impl<'a> Sending<'a> {
    /// The attempts are over without an answer to pass on as it came: the best response an
    /// attempt got, else the last error.
    fn exhausted(mut self, cluster: ClusterId) -> Sent {
        let result = match (self.fallback.take(), self.last_error.take()) {
            (Some(response), _) => Ok(response),
            (None, Some(error)) => Err(error),
            (None, None) => {
                let cluster = self.routed.runtime.table.cluster(cluster);
                Err(ProxyError::NoEndpoints(cluster.key.to_string()))
            }
        };
        self.sent(result)
    }

    /// `progress`: how the client's body is going, when it has one.
    #[inline]
    fn new(
        routed: &'a Routed,
        progress: Option<&'a Progress>,
        replayable: bool,
        idempotent: bool,
    ) -> Sending<'a> {
        let policy = &*routed.state().proxy;
        Sending {
            routed,
            progress,
            facts: Facts {
                conditions: policy.next_upstream,
                replayable,
                idempotent,
                attempts_left: true,
                endpoints_left: true,
            },
            tries: match policy.next_upstream_tries {
                0 => u32::MAX,
                n => n,
            },
            deadline: policy.next_upstream_timeout.map(|t| Instant::now() + t),
            attempts: Attempts::new(),
            tried: smallvec::SmallVec::new(),
            fallback: None,
            last_error: None,
            set_cookie: None,
        }
    }

    #[inline]
    fn sent(self, result: Result<Response<ResponseBody>, ProxyError>) -> Sent {
        Sent {
            result,
            attempts: self.attempts,
            set_cookie: self.set_cookie,
        }
    }

    /// What an attempt on the endpoint `(index, address, stats)`, picked at `started`, came
    /// to at `now`: noted in the endpoint's health and the request's attempts, then decided
    /// by the retry rule.
    #[inline]
    fn settle(
        &mut self,
        exchanged: Exchanged,
        (index, endpoint, stats): (usize, &EndpointAddress, &EndpointStats),
        started: Instant,
        now: Instant,
    ) -> Step {
        let mut record = Attempt {
            endpoint: index,
            status: None,
            error: None,
            ejected: false,
            connect: exchanged.connected_at.map(|at| at - started),
            response: None,
        };
        let error = match exchanged.result {
            Ok(response) => {
                stats.health.record_success();
                let status = response.status().as_u16();
                record.status = Some(status);
                record.response = Some(now - exchanged.connected_at.unwrap_or(started));
                self.attempts.push(record);
                if retry::again(Outcome::Answered(status), &self.facts) {
                    debug!(endpoint = %endpoint, status, "trying another endpoint");
                    return Step::Again(Some(response), None);
                }
                return Step::Done(Ok(response));
            }
            Err(error) => error,
        };
        if let UpstreamError::Connect(_) = error {
            record.ejected = stats.health.record_failure(balance::now_nanos());
        }
        self.failed(endpoint, error, record)
    }

    /// An attempt that got no response: the client's fault (its body too large, its request
    /// unsendable), or the upstream's, which the retry rule may send elsewhere.
    #[inline]
    fn failed(
        &mut self,
        endpoint: &EndpointAddress,
        error: UpstreamError,
        mut record: Attempt,
    ) -> Step {
        if let UpstreamError::Unsendable(why) = error {
            self.attempts.push(record);
            return Step::Done(Err(ProxyError::BadRequest(why)));
        }
        // The client's body passed the size limit on its way (413), or broke (400): the
        // fault is the client's, not the upstream's, and no upstream error is counted.
        if error.may_have_reached()
            && let Some(progress) = self.progress
        {
            if progress.exceeded.load(Ordering::Relaxed) {
                self.attempts.push(record);
                let limit = self.routed.state().proxy.body_size_limit;
                return Step::Done(Err(ProxyError::PayloadTooLarge(limit.unwrap_or_default())));
            }
            if progress.broken.load(Ordering::Relaxed) {
                self.attempts.push(record);
                let why = "the request body is malformed or was cut off";
                return Step::Done(Err(ProxyError::BadRequest(why)));
            }
        }
        record.error = error.kind();
        self.attempts.push(record);
        let outcome = Outcome::Failed {
            reached: error.may_have_reached(),
            timeout: error.is_timeout(),
        };
        let again = retry::again(outcome, &self.facts);
        debug!(endpoint = %endpoint, error = %error, retry = again, "attempt failed");
        let error = proxy_error(endpoint, error);
        if again {
            Step::Again(None, Some(error))
        } else {
            Step::Stop(error)
        }
    }
}

/// The answer for an attempt's failure, naming the endpoint for the log.
fn proxy_error(endpoint: &EndpointAddress, error: UpstreamError) -> ProxyError {
    let endpoint = endpoint.to_string();
    match error {
        UpstreamError::Connect(e) if e.is_timeout() => ProxyError::UpstreamTimeout { endpoint },
        UpstreamError::Connect(e) => ProxyError::UpstreamConnect {
            endpoint,
            source: Box::new(e),
        },
        UpstreamError::TimedOut => ProxyError::UpstreamTimeout { endpoint },
        UpstreamError::Failed(source) => ProxyError::UpstreamFailed { endpoint, source },
        UpstreamError::Unsendable(why) => ProxyError::BadRequest(why),
    }
}
