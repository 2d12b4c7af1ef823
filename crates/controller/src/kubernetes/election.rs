//! Leader election on a `coordination.k8s.io/v1` Lease, so that one replica writes status and
//! Events. Expiry is judged by when this replica last saw the Lease change, on its own clock,
//! so clock skew between nodes cannot make two replicas lead at once; a leader that cannot
//! renew steps down after the renew deadline, before any other replica may take over.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

/// Lease name, place and timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionSettings {
    pub lease_name: String,
    pub namespace: String,
    /// This replica's name; two replicas must never share one.
    pub identity: String,
    /// How long others wait after the last renewal they saw before taking over.
    pub lease_duration: Duration,
    /// How long a leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

/// One candidate in the election.
#[derive(Debug)]
pub struct Election {
    api: Api<Lease>,
    settings: ElectionSettings,
    leader: watch::Sender<bool>,
    /// The Lease's resourceVersion when this replica last saw it change, and when.
    observed: Option<(String, Instant)>,
}

/// What one attempt found.
enum Attempt {
    Leading,
    HeldBy(String),
}

impl Election {
    pub fn new(client: Client, settings: ElectionSettings) -> Election {
        Election {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            leader: watch::Sender::new(false),
            observed: None,
        }
    }

    /// `true` while this replica leads.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    /// Takes part until `shutdown` resolves, then hands the Lease over if it holds it, so
    /// another replica takes over at its next try instead of after the lease duration.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut last_renewal: Option<Instant> = None;
        let mut next_try = Instant::now();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep_until(next_try) => {}
            }
            next_try = Instant::now() + self.settings.retry_period;
            let leading = *self.leader.borrow();
            // An attempt may not outlast the time left to renew in.
            let budget = self.settings.retry_period.max(Duration::from_secs(1));
            let attempt = tokio::time::timeout(budget, self.attempt()).await;
            match attempt {
                Ok(Ok(Attempt::Leading)) => {
                    last_renewal = Some(Instant::now());
                    if !leading {
                        info!(lease = %self.settings.lease_name, identity = %self.settings.identity, "became the leader");
                        self.leader.send_replace(true);
                    }
                }
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    if leading {
                        warn!(lease = %self.settings.lease_name, holder = %holder, "another replica holds the lease: no longer the leader");
                        self.leader.send_replace(false);
                    }
                }
                Ok(Err(e)) => self.failed(&e.to_string(), leading, last_renewal),
                Err(_) => self.failed("timed out", leading, last_renewal),
            }
        }
        if *self.leader.borrow() {
            self.leader.send_replace(false);
            match tokio::time::timeout(self.settings.retry_period, self.release()).await {
                Ok(Ok(())) => info!(lease = %self.settings.lease_name, "lease released"),
                Ok(Err(e)) => {
                    warn!(lease = %self.settings.lease_name, error = %e, "could not release the lease; another replica takes over when it expires")
                }
                Err(_) => {
                    warn!(lease = %self.settings.lease_name, "releasing the lease timed out; another replica takes over when it expires")
                }
            }
        }
    }

    fn failed(&self, error: &str, leading: bool, last_renewal: Option<Instant>) {
        warn!(lease = %self.settings.lease_name, error, "leader election: could not read or write the lease");
        let overdue = last_renewal.is_none_or(|at| at.elapsed() >= self.settings.renew_deadline);
        if leading && overdue {
            warn!(lease = %self.settings.lease_name, "renew deadline passed: no longer the leader");
            self.leader.send_replace(false);
        }
    }

    async fn attempt(&mut self) -> Result<Attempt, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration_seconds =
            i32::try_from(self.settings.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let identity = self.settings.identity.clone();
        let Some(lease) = self.api.get_opt(&self.settings.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.lease_name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(identity),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Leading),
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    Ok(Attempt::HeldBy("(created concurrently)".to_owned()))
                }
                Err(e) => Err(e),
            };
        };
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let observed_at = match &self.observed {
            Some((seen, at)) if *seen == version => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((version, at));
                at
            }
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(identity.as_str());
        let their_duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.settings.lease_duration, Duration::from_secs);
        if let Some(holder) = &holder
            && !mine
            && observed_at.elapsed() < their_duration
        {
            return Ok(Attempt::HeldBy(holder.clone()));
        }
        let mut next = spec;
        if !mine {
            next.acquire_time = Some(now.clone());
            next.lease_transitions = Some(next.lease_transitions.unwrap_or(0) + 1);
        }
        next.holder_identity = Some(identity);
        next.lease_duration_seconds = Some(duration_seconds);
        next.renew_time = Some(now);
        let updated = Lease {
            metadata: lease.metadata,
            spec: Some(next),
        };
        match self
            .api
            .replace(&self.settings.lease_name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => Ok(Attempt::Leading),
            // Someone else wrote first; the next attempt reads who.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                Ok(Attempt::HeldBy(holder.unwrap_or_default()))
            }
            Err(e) => Err(e),
        }
    }

    /// Empties the holder so the next candidate need not wait for expiry.
    async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.settings.lease_name).await? else {
            return Ok(());
        };
        let Some(spec) = &mut lease.spec else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&self.settings.lease_name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }
}
