//! Running against the Kubernetes API: the client, the watches, leader election, and the
//! status and Event writers, wired to the shared compile and publish path.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;
use vestibule_controller::kubernetes::{
    self, Election, ElectionSettings, EventWriter, KubeSource, Scope, StatusWriter,
};
use vestibule_controller::{Debounce, Publisher, SourceSnapshot};
use vestibule_translate::Options;

use crate::cli::RunArgs;
use crate::metrics::ClusterHandles;

/// Watch events: a rollout moves many EndpointSlices within a few milliseconds; one compile
/// for the burst, but never more than half a second late.
const WATCH_DEBOUNCE: Debounce = Debounce {
    holdoff: Duration::from_millis(50),
    max_delay: Duration::from_millis(500),
};

/// The running cluster source.
#[derive(Debug)]
pub(crate) struct Started {
    pub source: watch::Receiver<Arc<SourceSnapshot>>,
    /// Ends after `shutdown`, once the lease is handed over.
    pub election: JoinHandle<()>,
    /// For the metrics: leadership and watch counters.
    pub handles: ClusterHandles,
}

/// Connects, waits until every watch has listed once, and starts following. The election
/// runs until `shutdown` is cancelled.
pub(crate) async fn start(
    args: &RunArgs,
    options: &Options,
    publisher: &Arc<Publisher>,
    shutdown: CancellationToken,
) -> anyhow::Result<Started> {
    let flags = &args.cluster;
    let client = kubernetes::client(flags.kubeconfig.as_deref())
        .await
        .context(
            "connecting to the Kubernetes API (to run without a cluster, pass --manifests PATH)",
        )?;
    let scope = Scope::of(options);
    let mut source = KubeSource::start(&client, &scope);
    info!(
        namespaces = %if scope.namespaces.is_empty() { "all".to_owned() } else { scope.namespaces.join(",") },
        "watching the Kubernetes API; ready once every kind is listed"
    );
    source.synced().await;
    let first = source.current();
    info!(objects = first.snapshot.len(), "every watched kind listed");
    let stores = source.stores();
    let stats = source.stats();
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(source.follow(tx, WATCH_DEBOUNCE));

    let identity = kubernetes::own_identity();
    let election = Election::new(
        client.clone(),
        ElectionSettings {
            lease_name: flags.election_id.clone(),
            namespace: kubernetes::own_namespace(),
            identity: identity.clone(),
            lease_duration: flags.election_lease_duration,
            renew_deadline: flags.election_renew_deadline,
            retry_period: flags.election_retry_period,
        },
    );
    let leader = election.subscribe();
    let leader_for_metrics = election.subscribe();
    let election = tokio::spawn(election.run(shutdown.cancelled_owned()));
    tokio::spawn(
        EventWriter::new(
            client.clone(),
            identity,
            stores.clone(),
            publisher.clone(),
            leader.clone(),
        )
        .run(),
    );
    match flags.status_addresses() {
        Some(addresses) => {
            tokio::spawn(
                StatusWriter::new(client, stores, publisher.clone(), leader, addresses).run(),
            );
        }
        None if flags.update_status => info!(
            "Ingress status is not written: give --publish-service or --publish-status-address"
        ),
        None => info!("Ingress status is not written (--update-status=false)"),
    }
    Ok(Started {
        source: rx,
        election,
        handles: ClusterHandles {
            leader: leader_for_metrics,
            stats,
        },
    })
}
