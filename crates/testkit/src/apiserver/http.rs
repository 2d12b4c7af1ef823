//! The fake API server's HTTP side: routing Kubernetes API paths to verbs, answering them from
//! the store, list pages, watch streams, and the `Status` errors clients expect.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::select::Filter;
use super::store::{self, Change, ChangeKind, Gone, Key, ResourceDef, meta_mut, meta_str};
use super::{RecordedRequest, Shared, lock};

pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

const BOOKMARK_EVERY: Duration = Duration::from_secs(1);
const MAX_BODY: usize = 64 << 20;

/// An error answered as a `Status` object with the same HTTP code.
#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    fn not_found(def: &ResourceDef, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", def.qualified()),
        )
    }

    fn no_such_resource() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    fn method_not_allowed(verb: &str, def: &ResourceDef) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!(
                "{verb} is not supported on resources of kind {:?}",
                def.kind
            ),
        )
    }

    /// What RBAC answers, worded as the API server words it.
    fn forbidden(def: &ResourceDef, verb: &str, namespace: Option<&str>) -> Self {
        let scope = match namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_owned(),
        };
        Self::new(
            403,
            "Forbidden",
            format!(
                "{} is forbidden: User \"system:anonymous\" cannot {verb} resource \"{}\" in API \
                 group \"{}\" {scope}",
                def.qualified(),
                def.plural,
                def.group
            ),
        )
    }

    fn conflict(def: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                def.qualified()
            ),
        )
    }

    fn too_old(gone: Gone) -> Self {
        Self::new(
            410,
            "Expired",
            format!(
                "too old resource version: {} ({})",
                gone.requested, gone.oldest
            ),
        )
    }

    fn status(&self) -> Value {
        status_object(self.code, self.reason, &self.message)
    }

    fn response(&self) -> Response<Body> {
        json_response(self.code, &self.status())
    }
}

fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A resource path taken apart.
#[derive(Debug, Clone)]
struct Route {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        let segments: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        if segments.iter().any(String::is_empty) {
            return None;
        }
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", "v1", rest @ ..] => ("", "v1", rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        // `namespaces/{name}/status` is the Namespace's own subresource, not a namespaced list.
        let (namespace, rest) = match rest {
            ["namespaces", ns, plural, more @ ..] if !matches!(*plural, "status" | "finalize") => {
                (Some(*ns), (*plural, more))
            }
            [plural, more @ ..] => (None, (*plural, more)),
            [] => return None,
        };
        let (plural, more) = rest;
        let (name, subresource) = match more {
            [] => (None, None),
            [name] => (Some(*name), None),
            [name, sub] => (Some(*name), Some(*sub)),
            _ => return None,
        };
        Some(Route {
            group: group.to_owned(),
            version: version.to_owned(),
            plural: plural.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
            subresource: subresource.map(str::to_owned),
        })
    }

    /// The RBAC verb, as an authorizer would see the request.
    fn verb(&self, method: &Method, watch: bool) -> String {
        let verb = match (self.name.is_some(), method) {
            (false, &Method::GET) if watch => "watch",
            (false, &Method::GET) => "list",
            (false, &Method::POST) => "create",
            (false, &Method::DELETE) => "deletecollection",
            (true, &Method::GET) => "get",
            (true, &Method::PUT) => "update",
            (true, &Method::PATCH) => "patch",
            (true, &Method::DELETE) => "delete",
            (_, other) => return other.as_str().to_ascii_lowercase(),
        };
        verb.to_owned()
    }

    fn key(&self) -> Key {
        (
            self.namespace.clone().unwrap_or_default(),
            self.name.clone().unwrap_or_default(),
        )
    }
}

struct Query(HashMap<String, String>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        Query(
            query
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Answers one request and records it.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: http::Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let query = Query::parse(parts.uri.query());
    let Some(route) = Route::parse(parts.uri.path()) else {
        let response = non_resource(&shared, parts.uri.path());
        shared.record(RecordedRequest {
            verb: parts.method.as_str().to_ascii_lowercase(),
            group: String::new(),
            version: String::new(),
            resource: parts.uri.path().to_owned(),
            subresource: None,
            namespace: None,
            name: None,
            status: response.status().as_u16(),
        });
        return Ok(response);
    };
    let verb = route.verb(&parts.method, query.flag("watch"));
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_owned());
    let response = match respond(
        &shared,
        &route,
        &verb,
        content_type.as_deref(),
        &query,
        body,
    )
    .await
    {
        Ok(response) => response,
        Err(error) => error.response(),
    };
    shared.record(RecordedRequest {
        verb,
        group: route.group,
        version: route.version,
        resource: route.plural,
        subresource: route.subresource,
        namespace: route.namespace,
        name: route.name,
        status: response.status().as_u16(),
    });
    Ok(response)
}

/// Discovery and health paths, enough for clients that probe before they list.
fn non_resource(shared: &Shared, path: &str) -> Response<Body> {
    let defs: Vec<ResourceDef> = {
        let store = lock(&shared.store);
        (0..).map_while(|i| store.def(i).cloned()).collect()
    };
    let resources = |group: &str, version: &str| -> Vec<Value> {
        defs.iter()
            .filter(|d| d.group == group && d.version == version)
            .map(|d| {
                json!({"name": d.plural, "singularName": d.kind.to_ascii_lowercase(),
                    "namespaced": d.namespaced, "kind": d.kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
            })
            .collect()
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["version"] => json_response(
            200,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-vestibule-test",
                "platform": "linux/amd64"}),
        ),
        ["healthz" | "livez" | "readyz"] => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")).boxed_unsync());
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            response
        }
        ["api"] => json_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        ),
        ["apis"] => {
            let mut groups: Vec<(&str, &str)> = defs
                .iter()
                .filter(|d| !d.group.is_empty())
                .map(|d| (d.group.as_str(), d.version.as_str()))
                .collect();
            groups.sort_unstable();
            groups.dedup();
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(g, v)| {
                    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                    json!({"name": g, "versions": [gv], "preferredVersion": gv})
                })
                .collect();
            json_response(
                200,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        ["api", "v1"] => json_response(
            200,
            &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
                "resources": resources("", "v1")}),
        ),
        ["apis", group, version] => json_response(
            200,
            &json!({"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": format!("{group}/{version}"),
                "resources": resources(group, version)}),
        ),
        _ => ApiError::no_such_resource().response(),
    }
}

async fn respond(
    shared: &Arc<Shared>,
    route: &Route,
    verb: &str,
    content_type: Option<&str>,
    query: &Query,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    let (resource, def) = {
        let store = lock(&shared.store);
        let resource = store
            .find(&route.group, &route.version, &route.plural)
            .ok_or_else(ApiError::no_such_resource)?;
        let def = store
            .def(resource)
            .cloned()
            .ok_or_else(ApiError::no_such_resource)?;
        (resource, def)
    };
    let refused = lock(&shared.forbidden).contains(&(def.group.clone(), def.plural.clone()));
    if refused {
        return Err(ApiError::forbidden(&def, verb, route.namespace.as_deref()));
    }
    let misplaced = if def.namespaced {
        route.namespace.is_none() && route.name.is_some()
    } else {
        route.namespace.is_some()
    };
    let bad_subresource = route
        .subresource
        .as_deref()
        .is_some_and(|s| s != "status" || !def.status);
    if misplaced || bad_subresource {
        return Err(ApiError::no_such_resource());
    }
    let target = Target {
        resource,
        def,
        route: route.clone(),
    };
    match verb {
        "list" => list(shared, &target, query),
        "watch" => watch(shared, &target, query),
        "get" => get(shared, &target),
        "create" if !target.def.namespaced || route.namespace.is_some() => {
            create(shared, &target, read_object(body).await?)
        }
        "update" => update(shared, &target, read_object(body).await?),
        "patch" => {
            let body = read_body(body).await?;
            patch(shared, &target, content_type.unwrap_or(""), &body)
        }
        "delete" => {
            let body = read_body(body).await?;
            delete(shared, &target, &body)
        }
        other => Err(ApiError::method_not_allowed(other, &target.def)),
    }
}

/// What a request addresses, once routed and checked.
struct Target {
    resource: usize,
    def: ResourceDef,
    route: Route,
}

impl Target {
    fn name(&self) -> &str {
        self.route.name.as_deref().unwrap_or("")
    }

    fn status_only(&self) -> bool {
        self.route.subresource.as_deref() == Some("status")
    }
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))
}

async fn read_object(body: Incoming) -> Result<Value, ApiError> {
    let bytes = read_body(body).await?;
    parse_object(&bytes)
}

fn parse_object(bytes: &[u8]) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: {e}"
        ))),
    }
}

fn notify(shared: &Shared, rv: u64) {
    shared.changes.send_replace(rv);
}

fn object_rv(object: &Value) -> u64 {
    meta_str(object, "resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

fn get(shared: &Shared, target: &Target) -> Result<Response<Body>, ApiError> {
    let object = lock(&shared.store)
        .get(target.resource, &target.route.key())
        .ok_or_else(|| ApiError::not_found(&target.def, target.name()))?;
    Ok(json_response(200, &object))
}

fn filter(target: &Target, query: &Query) -> Result<Filter, ApiError> {
    Filter::parse(
        target.route.namespace.clone(),
        query.get("labelSelector"),
        query.get("fieldSelector"),
        &target.def.plural,
    )
    .map_err(ApiError::bad_request)
}

fn list(shared: &Shared, target: &Target, query: &Query) -> Result<Response<Body>, ApiError> {
    let filter = filter(target, query)?;
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let resume = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => Some(parse_continue(token)?),
        None => None,
    };
    let (list_rv, items, more) = {
        let store = lock(&shared.store);
        let list_rv = match &resume {
            Some((rv, _)) => {
                store.check_not_compacted(*rv).map_err(|_| {
                    ApiError::new(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent \
                         list result. You can start a new list without the continue parameter.",
                    )
                })?;
                *rv
            }
            None => store.rv(),
        };
        let (items, more) = store.page(
            target.resource,
            resume.as_ref().map(|(_, key)| key),
            limit,
            |o| filter.matches(o),
        );
        (list_rv, items, more)
    };
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if more && let Some(((ns, name), _)) = items.last() {
        metadata["continue"] = Value::String(format!("{list_rv}/{ns}/{name}"));
    }
    let body = json!({
        "apiVersion": target.def.api_version(),
        "kind": format!("{}List", target.def.kind),
        "metadata": metadata,
        "items": items.iter().map(|(_, o)| &**o).collect::<Vec<_>>(),
    });
    Ok(json_response(200, &body))
}

fn parse_continue(token: &str) -> Result<(u64, Key), ApiError> {
    let mut parts = token.splitn(3, '/');
    match (
        parts.next().map(str::parse::<u64>),
        parts.next(),
        parts.next(),
    ) {
        (Some(Ok(rv)), Some(ns), Some(name)) => Ok((rv, (ns.to_owned(), name.to_owned()))),
        _ => Err(ApiError::bad_request(format!(
            "invalid continue token {token:?}"
        ))),
    }
}

fn create(shared: &Shared, target: &Target, mut object: Value) -> Result<Response<Body>, ApiError> {
    let namespace = target.route.namespace.clone().unwrap_or_default();
    if let Some(given) = meta_str(&object, "namespace")
        && target.def.namespaced
        && given != namespace
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    set_identity(&mut object, &target.def, &namespace, None);
    let name = meta_str(&object, "name").map(str::to_owned);
    let prefix = meta_str(&object, "generateName").map(str::to_owned);
    store::prepare_create(&mut object);
    let stored = {
        let mut store = lock(&shared.store);
        let name = match (name, prefix) {
            (Some(name), _) => name,
            (None, Some(prefix)) => loop {
                let candidate = store::generated_name(&prefix);
                if store
                    .get(target.resource, &(namespace.clone(), candidate.clone()))
                    .is_none()
                {
                    break candidate;
                }
            },
            (None, None) => {
                return Err(ApiError::bad_request(
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        };
        let key = (namespace.clone(), name.clone());
        if store.get(target.resource, &key).is_some() {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", target.def.qualified()),
            ));
        }
        store::set_meta(&mut object, "name", Value::String(name));
        store.put(target.resource, key, object)
    };
    notify(shared, object_rv(&stored));
    Ok(json_response(201, &stored))
}

/// Pins name and namespace to the request's, so a body can't move an object.
fn set_identity(object: &mut Value, def: &ResourceDef, namespace: &str, name: Option<&str>) {
    if let Some(meta) = meta_mut(object) {
        if def.namespaced {
            meta.insert("namespace".to_owned(), Value::String(namespace.to_owned()));
        } else {
            meta.remove("namespace");
        }
        if let Some(name) = name {
            meta.insert("name".to_owned(), Value::String(name.to_owned()));
        }
    }
}

/// The object to store when `requested` is written over `stored`: the status subresource
/// changes only `status`, the main resource everything but `status` (when it has one).
fn split_status(target: &Target, stored: &Value, requested: Value) -> Value {
    let take_status = |mut into: Value, from: &Value| {
        if let Value::Object(map) = &mut into {
            match from.get("status") {
                Some(status) => {
                    map.insert("status".to_owned(), status.clone());
                }
                None => {
                    map.remove("status");
                }
            }
        }
        into
    };
    if target.status_only() {
        take_status(stored.clone(), &requested)
    } else if target.def.status {
        take_status(requested, stored)
    } else {
        requested
    }
}

fn update(shared: &Shared, target: &Target, mut object: Value) -> Result<Response<Body>, ApiError> {
    let name = target.name().to_owned();
    if let Some(given) = meta_str(&object, "name")
        && given != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    let namespace = target.route.namespace.clone().unwrap_or_default();
    set_identity(&mut object, &target.def, &namespace, Some(&name));
    let stored = {
        let mut store = lock(&shared.store);
        let key = target.route.key();
        let current = store
            .get(target.resource, &key)
            .ok_or_else(|| ApiError::not_found(&target.def, &name))?;
        if let Some(rv) = meta_str(&object, "resourceVersion")
            && Some(rv) != meta_str(&current, "resourceVersion")
        {
            return Err(ApiError::conflict(&target.def, &name));
        }
        let mut next = split_status(target, &current, object);
        store::prepare_update(&current, &mut next, false);
        store.put(target.resource, key, next)
    };
    notify(shared, object_rv(&stored));
    Ok(json_response(200, &stored))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchKind {
    Merge,
    Json,
    Apply,
}

fn patch(
    shared: &Shared,
    target: &Target,
    content_type: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let kind = match content_type {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            PatchKind::Merge
        }
        "application/json-patch+json" => PatchKind::Json,
        "application/apply-patch+yaml" | "application/apply-patch+json" => PatchKind::Apply,
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {other:?}"
                ),
            ));
        }
    };
    let patch: Value = match kind {
        PatchKind::Apply => serde_json::from_slice(body)
            .or_else(|_| serde_saphyr::from_slice::<Value>(body).map_err(|e| e.to_string()))
            .map_err(|e| ApiError::bad_request(format!("invalid apply patch: {e}")))?,
        _ => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid patch: {e}")))?,
    };
    let name = target.name().to_owned();
    let namespace = target.route.namespace.clone().unwrap_or_default();
    let key = target.route.key();
    let (code, stored) = {
        let mut store = lock(&shared.store);
        match store.get(target.resource, &key) {
            None if kind == PatchKind::Apply && !target.status_only() => {
                let mut object = Value::Object(serde_json::Map::new());
                super::patch::merge(&mut object, &patch);
                set_identity(&mut object, &target.def, &namespace, Some(&name));
                store::prepare_create(&mut object);
                (201, store.put(target.resource, key, object))
            }
            None => return Err(ApiError::not_found(&target.def, &name)),
            Some(current) => {
                let mut patched = (*current).clone();
                match kind {
                    PatchKind::Json => super::patch::json_patch(&mut patched, &patch)
                        .map_err(|e| ApiError::new(422, "Invalid", e))?,
                    PatchKind::Merge | PatchKind::Apply => {
                        super::patch::merge(&mut patched, &patch);
                    }
                }
                if meta_str(&patched, "resourceVersion") != meta_str(&current, "resourceVersion") {
                    return Err(ApiError::conflict(&target.def, &name));
                }
                set_identity(&mut patched, &target.def, &namespace, Some(&name));
                let mut next = split_status(target, &current, patched);
                store::prepare_update(&current, &mut next, false);
                (200, store.put(target.resource, key, next))
            }
        }
    };
    notify(shared, object_rv(&stored));
    Ok(json_response(code, &stored))
}

fn delete(shared: &Shared, target: &Target, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let options: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let precondition = |field: &str| {
        options
            .pointer(&format!("/preconditions/{field}"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let removed = {
        let mut store = lock(&shared.store);
        let key = target.route.key();
        let current = store
            .get(target.resource, &key)
            .ok_or_else(|| ApiError::not_found(&target.def, target.name()))?;
        for field in ["resourceVersion", "uid"] {
            if let Some(expected) = precondition(field)
                && Some(expected.as_str()) != meta_str(&current, field)
            {
                return Err(ApiError::conflict(&target.def, target.name()));
            }
        }
        store
            .remove(target.resource, &key)
            .ok_or_else(|| ApiError::not_found(&target.def, target.name()))?
    };
    notify(shared, object_rv(&removed));
    Ok(json_response(200, &removed))
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark_line(def: &ResourceDef, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"apiVersion": def.api_version(), "kind": def.kind, "metadata": metadata}),
    )
}

/// How a watch with `filter` sees `change`: an object leaving the selection is a deletion to
/// it, one entering is an addition.
fn change_line(change: &Change, filter: &Filter) -> Option<Bytes> {
    let now = filter.matches(&change.object);
    let kind = match change.kind {
        ChangeKind::Added => now.then_some("ADDED"),
        ChangeKind::Deleted => now.then_some("DELETED"),
        ChangeKind::Modified => {
            let before = change
                .previous
                .as_deref()
                .is_some_and(|p| filter.matches(p));
            match (before, now) {
                (true, true) => Some("MODIFIED"),
                (true, false) => Some("DELETED"),
                (false, true) => Some("ADDED"),
                (false, false) => None,
            }
        }
    }?;
    Some(event_line(kind, &change.object))
}

fn watch(shared: &Arc<Shared>, target: &Target, query: &Query) -> Result<Response<Body>, ApiError> {
    let filter = filter(target, query)?;
    let initial_events = query.flag("sendInitialEvents");
    let from = match query
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty() && *rv != "0")
    {
        Some(_) if initial_events => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?,
        ),
        None => None,
    };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t));
    let mut changes = shared.changes.subscribe();
    changes.borrow_and_update();
    let mut pending = VecDeque::new();
    let mut finished = false;
    let cursor = {
        let store = lock(&shared.store);
        match from {
            Some(rv) => {
                if let Err(gone) = store.check_not_compacted(rv) {
                    pending.push_back(event_line("ERROR", &ApiError::too_old(gone).status()));
                    finished = true;
                }
                rv
            }
            None => {
                let (objects, _) =
                    store.page(target.resource, None, usize::MAX, |o| filter.matches(o));
                let rv = store.rv();
                drop(store);
                pending.extend(objects.iter().map(|(_, o)| event_line("ADDED", o)));
                if initial_events {
                    pending.push_back(bookmark_line(&target.def, rv, true));
                }
                rv
            }
        }
    };
    shared.open_watches.fetch_add(1, Ordering::SeqCst);
    let stream = WatchStream {
        open: OpenWatch(shared.clone()),
        resource: target.resource,
        def: target.def.clone(),
        filter,
        cursor,
        pending,
        changes,
        deadline: timeout,
        bookmarks: query.flag("allowWatchBookmarks"),
        next_bookmark: Instant::now() + BOOKMARK_EVERY,
        finished,
    };
    let body = StreamBody::new(futures_util::stream::unfold(stream, next_frame));
    let mut response = Response::new(body.boxed_unsync());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Counts an open watch stream for as long as its body lives.
struct OpenWatch(Arc<Shared>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

struct WatchStream {
    open: OpenWatch,
    resource: usize,
    def: ResourceDef,
    filter: Filter,
    /// Every change up to this RV has been considered.
    cursor: u64,
    pending: VecDeque<Bytes>,
    changes: watch::Receiver<u64>,
    deadline: Option<Instant>,
    bookmarks: bool,
    next_bookmark: Instant,
    /// Ends the stream once `pending` drains (after an ERROR event).
    finished: bool,
}

/// The next chunk of a watch stream; the store lock is held only to copy changes out, never
/// while writing to the socket.
async fn next_frame(
    mut stream: WatchStream,
) -> Option<(Result<Frame<Bytes>, Infallible>, WatchStream)> {
    loop {
        if let Some(line) = stream.pending.pop_front() {
            stream.next_bookmark = Instant::now() + BOOKMARK_EVERY;
            return Some((Ok(Frame::data(line)), stream));
        }
        if stream.finished {
            return None;
        }
        // Marked seen before reading the store, so a write after the read still wakes us.
        stream.changes.borrow_and_update();
        let changes = lock(&stream.open.0.store).changes_since(stream.cursor, stream.resource);
        match changes {
            Err(gone) => {
                let status = ApiError::too_old(gone).status();
                stream.pending.push_back(event_line("ERROR", &status));
                stream.finished = true;
                continue;
            }
            Ok((changes, rv)) => {
                stream.cursor = rv;
                let filter = &stream.filter;
                stream
                    .pending
                    .extend(changes.iter().filter_map(|c| change_line(c, filter)));
                if !stream.pending.is_empty() {
                    continue;
                }
            }
        }
        let far = Instant::now() + Duration::from_secs(86_400);
        let bookmark_at = if stream.bookmarks {
            stream.next_bookmark
        } else {
            far
        };
        let wake = stream.deadline.unwrap_or(far).min(bookmark_at);
        tokio::select! {
            changed = stream.changes.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if stream.deadline.is_some_and(|d| now >= d) {
                    return None;
                }
                if stream.bookmarks && now >= stream.next_bookmark {
                    let line = bookmark_line(&stream.def, stream.cursor, false);
                    stream.pending.push_back(line);
                }
            }
        }
    }
}
