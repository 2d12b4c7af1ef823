//! The fake API server's state: objects per resource as JSON, the global resourceVersion
//! counter, and the change history that watches replay.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use serde_json::{Map, Value};

/// Changes kept for watches to replay; older ones count as compacted.
const HISTORY_LIMIT: usize = 100_000;

/// A resource the server serves.
#[derive(Debug, Clone)]
pub(crate) struct ResourceDef {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    /// Whether it has a `status` subresource, which splits status writes from the rest.
    pub status: bool,
}

impl ResourceDef {
    fn new(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        status: bool,
    ) -> Self {
        ResourceDef {
            group: group.to_owned(),
            version: version.to_owned(),
            plural: plural.to_owned(),
            kind: kind.to_owned(),
            namespaced,
            status,
        }
    }

    pub(super) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `leases.coordination.k8s.io`, or just `services` for the core group, as error messages
    /// name resources.
    pub(super) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

fn builtin() -> Vec<ResourceDef> {
    let r = ResourceDef::new;
    vec![
        r("", "v1", "services", "Service", true, true),
        r("", "v1", "secrets", "Secret", true, false),
        r("", "v1", "configmaps", "ConfigMap", true, false),
        r("", "v1", "events", "Event", true, false),
        r("", "v1", "endpoints", "Endpoints", true, false),
        r("", "v1", "pods", "Pod", true, true),
        r("", "v1", "namespaces", "Namespace", false, true),
        r(
            "networking.k8s.io",
            "v1",
            "ingresses",
            "Ingress",
            true,
            true,
        ),
        r(
            "networking.k8s.io",
            "v1",
            "ingressclasses",
            "IngressClass",
            false,
            false,
        ),
        r(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "EndpointSlice",
            true,
            false,
        ),
        r("coordination.k8s.io", "v1", "leases", "Lease", true, false),
        r("events.k8s.io", "v1", "events", "Event", true, false),
    ]
}

/// Namespace ("" when cluster-scoped) and name: also the list order.
pub(crate) type Key = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One write, as watches replay it.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub rv: u64,
    pub resource: usize,
    pub kind: ChangeKind,
    /// The object after the write; for a delete, the deleted object with the delete's RV.
    pub object: Arc<Value>,
    /// The object before a modification, so a watch can tell whether it stopped or started
    /// matching its selectors.
    pub previous: Option<Arc<Value>>,
}

#[derive(Debug)]
pub(crate) struct Store {
    defs: Vec<ResourceDef>,
    objects: Vec<BTreeMap<Key, Arc<Value>>>,
    rv: u64,
    /// Watches and continue tokens from before this RV get 410 Gone.
    compacted: u64,
    history: VecDeque<Change>,
}

/// A watch asked for history that is gone: the RV it asked from and the oldest one known.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gone {
    pub requested: u64,
    pub oldest: u64,
}

impl Store {
    pub(super) fn new() -> Store {
        let defs = builtin();
        Store {
            objects: defs.iter().map(|_| BTreeMap::new()).collect(),
            defs,
            rv: 1,
            compacted: 1,
            history: VecDeque::new(),
        }
    }

    pub(super) fn rv(&self) -> u64 {
        self.rv
    }

    pub(super) fn def(&self, resource: usize) -> Option<&ResourceDef> {
        self.defs.get(resource)
    }

    pub(super) fn find(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.defs
            .iter()
            .position(|d| d.group == group && d.version == version && d.plural == plural)
    }

    /// Finds a resource by its typed description, adding it when the table lacks it so any
    /// k8s-openapi type works through the typed helpers and then over HTTP.
    pub(super) fn find_or_add(&mut self, def: ResourceDef) -> usize {
        if let Some(i) = self.find(&def.group, &def.version, &def.plural) {
            return i;
        }
        self.defs.push(def);
        self.objects.push(BTreeMap::new());
        self.defs.len() - 1
    }

    pub(super) fn get(&self, resource: usize, key: &Key) -> Option<Arc<Value>> {
        self.objects.get(resource)?.get(key).cloned()
    }

    /// Objects after `after` (exclusive) in key order, at most `limit`, and whether more follow.
    pub(super) fn page(
        &self,
        resource: usize,
        after: Option<&Key>,
        limit: usize,
        mut keep: impl FnMut(&Value) -> bool,
    ) -> (Vec<(Key, Arc<Value>)>, bool) {
        let Some(objects) = self.objects.get(resource) else {
            return (Vec::new(), false);
        };
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut items = Vec::new();
        for (key, object) in objects.range::<Key, _>((start, Bound::Unbounded)) {
            if !keep(object) {
                continue;
            }
            if items.len() == limit {
                return (items, true);
            }
            items.push((key.clone(), object.clone()));
        }
        (items, false)
    }

    /// Stores `object` under `key` with a new RV and records the change.
    pub(super) fn put(&mut self, resource: usize, key: Key, mut object: Value) -> Arc<Value> {
        self.rv += 1;
        if let Some(def) = self.defs.get(resource) {
            set_type(&mut object, def);
        }
        set_meta(
            &mut object,
            "resourceVersion",
            Value::String(self.rv.to_string()),
        );
        let object = Arc::new(object);
        let previous = self
            .objects
            .get_mut(resource)
            .and_then(|objects| objects.insert(key, object.clone()));
        let kind = if previous.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        self.record(Change {
            rv: self.rv,
            resource,
            kind,
            object: object.clone(),
            previous,
        });
        object
    }

    /// Removes the object; returns it with the delete's RV.
    pub(super) fn remove(&mut self, resource: usize, key: &Key) -> Option<Arc<Value>> {
        let removed = self.objects.get_mut(resource)?.remove(key)?;
        self.rv += 1;
        let mut object = (*removed).clone();
        set_meta(
            &mut object,
            "resourceVersion",
            Value::String(self.rv.to_string()),
        );
        let object = Arc::new(object);
        self.record(Change {
            rv: self.rv,
            resource,
            kind: ChangeKind::Deleted,
            object: object.clone(),
            previous: None,
        });
        Some(object)
    }

    fn record(&mut self, change: Change) {
        self.history.push_back(change);
        while self.history.len() > HISTORY_LIMIT {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.rv;
            }
        }
    }

    /// Forgets all history: only the current RV remains a valid starting point.
    pub(super) fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    pub(super) fn check_not_compacted(&self, rv: u64) -> Result<(), Gone> {
        if rv < self.compacted {
            Err(Gone {
                requested: rv,
                oldest: self.compacted,
            })
        } else {
            Ok(())
        }
    }

    /// Changes to `resource` after `rv`, and the RV they bring a watch up to.
    pub(super) fn changes_since(
        &self,
        rv: u64,
        resource: usize,
    ) -> Result<(Vec<Change>, u64), Gone> {
        self.check_not_compacted(rv)?;
        let start = self.history.partition_point(|c| c.rv <= rv);
        let changes = self
            .history
            .range(start..)
            .filter(|c| c.resource == resource)
            .cloned()
            .collect();
        Ok((changes, self.rv.max(rv)))
    }
}

pub(crate) fn set_type(object: &mut Value, def: &ResourceDef) {
    if let Value::Object(map) = object {
        map.insert("apiVersion".to_owned(), Value::String(def.api_version()));
        map.insert("kind".to_owned(), Value::String(def.kind.clone()));
    }
}

pub(crate) fn meta_mut(object: &mut Value) -> Option<&mut Map<String, Value>> {
    let Value::Object(map) = object else {
        return None;
    };
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut()
}

pub(crate) fn set_meta(object: &mut Value, field: &str, value: Value) {
    if let Some(meta) = meta_mut(object) {
        meta.insert(field.to_owned(), value);
    }
}

pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object
        .get("metadata")?
        .get(field)?
        .as_str()
        .filter(|s| !s.is_empty())
}

fn uid() -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        fastrand::u32(..),
        fastrand::u16(..),
        fastrand::u16(..0x1000),
        fastrand::u16(0x8000..0xc000),
        fastrand::u64(..1 << 48)
    )
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A name for `generateName`: the prefix and five random characters, as the real server does.
pub(crate) fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..5)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect();
    format!("{prefix}{suffix}")
}

/// Fills what a create sets: uid, creationTimestamp (unless given), generation 1.
pub(crate) fn prepare_create(object: &mut Value) {
    if let Some(meta) = meta_mut(object) {
        meta.insert("uid".to_owned(), Value::String(uid()));
        if !meta.get("creationTimestamp").is_some_and(Value::is_string) {
            meta.insert("creationTimestamp".to_owned(), Value::String(now()));
        }
        meta.insert("generation".to_owned(), Value::from(1));
        meta.remove("resourceVersion");
    }
}

/// Carries over what an update cannot change (uid, creationTimestamp unless `keep_given_time`)
/// and bumps `generation` when anything outside metadata and status changed.
pub(crate) fn prepare_update(stored: &Value, object: &mut Value, keep_given_time: bool) {
    let generation = stored
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let generation = if body(stored) == body(object) {
        generation
    } else {
        generation + 1
    };
    let uid = stored.pointer("/metadata/uid").cloned();
    let created = stored.pointer("/metadata/creationTimestamp").cloned();
    if let Some(meta) = meta_mut(object) {
        if let Some(uid) = uid {
            meta.insert("uid".to_owned(), uid);
        }
        let given = keep_given_time && meta.get("creationTimestamp").is_some_and(Value::is_string);
        if let Some(created) = created.filter(|_| !given) {
            meta.insert("creationTimestamp".to_owned(), created);
        }
        meta.insert("generation".to_owned(), Value::from(generation));
    }
}

/// Everything `generation` tracks: the object without metadata, status and type fields.
fn body(object: &Value) -> Vec<(&String, &Value)> {
    match object {
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind"))
            .collect(),
        _ => Vec::new(),
    }
}
