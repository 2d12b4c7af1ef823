//! Events: each diagnostic about an Ingress becomes a Kubernetes Event on it, so
//! `kubectl describe ingress` shows what is wrong. Only the leader records them, and each
//! diagnostic once for as long as it lasts; if it goes away and comes back, it is recorded
//! again (the Event's count grows).

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::{StreamExt, stream};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::watch;
use tracing::warn;
use vestibule_translate::{Diagnostic, Kind, Severity};

use super::Stores;
use crate::Publisher;

/// The Events API caps a note at 1 kB.
const MAX_NOTE_BYTES: usize = 1024;
const CONCURRENT_WRITES: usize = 8;

/// Who records the Events, as `kubectl describe` shows in the `From` column.
const REPORTING_CONTROLLER: &str = "vestibule.dev/ingress-controller";

/// What makes one Event distinct from another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    namespace: String,
    name: String,
    uid: String,
    reason: &'static str,
    note: String,
}

/// Records Events for diagnostics while this replica leads.
pub struct EventWriter {
    recorder: Recorder,
    stores: Stores,
    publisher: Arc<Publisher>,
    leader: watch::Receiver<bool>,
}

impl std::fmt::Debug for EventWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventWriter").finish_non_exhaustive()
    }
}

/// The Event reason for a diagnostic.
pub(super) fn reason(diagnostic: &Diagnostic) -> &'static str {
    match diagnostic.severity {
        Severity::Error => "InvalidConfiguration",
        Severity::Warning => "ConfigurationWarning",
        Severity::Info => "ConfigurationNote",
    }
}

fn note(diagnostic: &Diagnostic) -> String {
    let mut note = if diagnostic.field.is_empty() {
        diagnostic.message.clone()
    } else {
        format!("{}: {}", diagnostic.field, diagnostic.message)
    };
    if note.len() > MAX_NOTE_BYTES {
        let mut end = MAX_NOTE_BYTES - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    note
}

impl EventWriter {
    pub fn new(
        client: Client,
        identity: String,
        stores: Stores,
        publisher: Arc<Publisher>,
        leader: watch::Receiver<bool>,
    ) -> EventWriter {
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.to_owned(),
            instance: Some(identity),
        };
        EventWriter {
            recorder: Recorder::new(client, reporter),
            stores,
            publisher,
            leader,
        }
    }

    /// Runs until the publisher goes away.
    pub async fn run(mut self) {
        let mut recorded: HashSet<Key> = HashSet::new();
        let mut generations = self.publisher.subscribe();
        loop {
            if *self.leader.borrow_and_update() {
                recorded = self.record(recorded).await;
            } else {
                // A new leader cannot know what the last one recorded; it records afresh.
                recorded.clear();
            }
            tokio::select! {
                changed = generations.changed() => if changed.is_err() { return },
                changed = self.leader.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Records what is new since `before`; returns what is current. A write that fails is
    /// left out, so it is tried again with the next configuration.
    async fn record(&self, before: HashSet<Key>) -> HashSet<Key> {
        let Some(published) = self.publisher.current() else {
            return before;
        };
        // Another controller's Ingresses are its business, whatever the compile noticed.
        let ours: HashSet<(&str, &str)> = published
            .report
            .ours()
            .map(|o| (o.namespace.as_str(), o.name.as_str()))
            .collect();
        let mut current = HashSet::new();
        let mut new = Vec::new();
        for diagnostic in &published.report.diagnostics {
            let object = &diagnostic.object;
            if object.kind != Kind::Ingress
                || !ours.contains(&(object.namespace.as_str(), object.name.as_str()))
            {
                continue;
            }
            let Some(ingress) = self
                .stores
                .ingress(&diagnostic.object.namespace, &diagnostic.object.name)
            else {
                continue;
            };
            let key = Key {
                namespace: diagnostic.object.namespace.clone(),
                name: diagnostic.object.name.clone(),
                uid: ingress.metadata.uid.clone().unwrap_or_default(),
                reason: reason(diagnostic),
                note: note(diagnostic),
            };
            if current.insert(key.clone()) && !before.contains(&key) {
                let reference = ObjectReference {
                    api_version: Some("networking.k8s.io/v1".to_owned()),
                    kind: Some("Ingress".to_owned()),
                    namespace: Some(key.namespace.clone()),
                    name: Some(key.name.clone()),
                    uid: ingress.metadata.uid.clone(),
                    resource_version: ingress.metadata.resource_version.clone(),
                    ..ObjectReference::default()
                };
                new.push((key, reference));
            }
        }
        let failed: Vec<Key> = stream::iter(new)
            .map(|(key, reference)| async move {
                let event = Event {
                    // A note is not a problem: kubectl shows it without the warning flag.
                    type_: if key.reason == "ConfigurationNote" {
                        EventType::Normal
                    } else {
                        EventType::Warning
                    },
                    reason: key.reason.to_owned(),
                    note: Some(key.note.clone()),
                    action: "Compile".to_owned(),
                    secondary: None,
                };
                match self.recorder.publish(&event, &reference).await {
                    Ok(()) => None,
                    Err(e) => {
                        warn!(ingress = %format!("{}/{}", key.namespace, key.name), error = %e, "could not record an Event");
                        Some(key)
                    }
                }
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .filter_map(|failed| async move { failed })
            .collect()
            .await;
        for key in failed {
            current.remove(&key);
        }
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vestibule_translate::ObjectRef;

    fn diagnostic(severity: Severity, field: &str, message: &str) -> Diagnostic {
        Diagnostic {
            object: ObjectRef::new(Kind::Ingress, "shop", "web"),
            field: field.to_owned(),
            severity,
            message: message.to_owned(),
        }
    }

    #[test]
    fn errors_and_warnings_have_their_own_reasons() {
        assert_eq!(
            reason(&diagnostic(Severity::Error, "spec", "x")),
            "InvalidConfiguration"
        );
        assert_eq!(
            reason(&diagnostic(Severity::Warning, "spec", "x")),
            "ConfigurationWarning"
        );
    }

    #[test]
    fn notes_name_the_field_and_fit_the_events_api() {
        let d = diagnostic(Severity::Error, "spec.rules[0].host", "is not a DNS name");
        assert_eq!(note(&d), "spec.rules[0].host: is not a DNS name");
        let long = diagnostic(Severity::Warning, "spec", &"é".repeat(2000));
        let n = note(&long);
        assert!(n.len() <= MAX_NOTE_BYTES, "{}", n.len());
        assert!(n.ends_with("..."));
    }
}
