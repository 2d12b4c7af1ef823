//! Manifest files: multi-document YAML or JSON (one object or a `List`) into the typed
//! objects Vestibule reads. Other kinds are skipped and named; a document that cannot be read
//! fails its whole file, so a file's objects are always all from one consistent version.

use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde::de::DeserializeOwned;
use serde_json::Value;
use vestibule_translate::Object;

/// The objects of one file, and the documents of kinds Vestibule does not read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedFile {
    pub objects: Vec<Object>,
    /// `Kind namespace/name` of each document that was skipped because of its kind.
    pub skipped: Vec<String>,
}

/// Why a file could not be read. The message names the document and, where it can, the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

pub fn parse_manifest(path: &Path, text: &str) -> Result<ParsedFile, ParseError> {
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let documents: Vec<Value> = if is_json {
        let value = serde_json::from_str(text).map_err(|e| ParseError(format!("JSON: {e}")))?;
        vec![value]
    } else {
        serde_saphyr::from_multiple_with_options(text, yaml_options(text.len()))
            .map_err(|e| ParseError(first_line(&e.to_string())))?
    };
    let mut parsed = ParsedFile::default();
    for (index, value) in documents.into_iter().enumerate() {
        let label = format!("document {}", index + 1);
        document(value, &label, &mut parsed).map_err(|e| ParseError(one_line(&e)))?;
    }
    Ok(parsed)
}

/// Messages quote the file's own text (kinds, names, versions, keys), which may hold line
/// breaks; a problem report is one line, so controls are written as escapes.
fn one_line(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// serde-saphyr's default budget (1,024 documents, 250,000 nodes) refuses a whole manifest
/// of a few thousand objects, which a file under the size limit easily holds. Counts that
/// grow with the text, as plain YAML does, are allowed in proportion to its length: literal
/// content can't produce more than about one event per byte. Only expansion through aliases
/// could, and the crate's own alias and anchor limits stay in force against it.
fn yaml_options(len: usize) -> serde_saphyr::Options {
    let defaults = serde_saphyr::Budget::default();
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: defaults.max_documents.max(len),
            max_nodes: defaults.max_nodes.max(len),
            max_events: defaults.max_events.max(len.saturating_mul(2)),
        },
    }
}

/// serde-saphyr renders a source snippet over several lines; problem reports are one line.
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message);
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

fn str_field<'v>(value: &'v Value, field: &str) -> Option<&'v str> {
    value.get(field).and_then(Value::as_str)
}

fn document(value: Value, label: &str, out: &mut ParsedFile) -> Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    if !value.is_object() {
        return Err(format!("{label}: expected a Kubernetes object (a mapping)"));
    }
    let api_version = str_field(&value, "apiVersion")
        .ok_or_else(|| format!("{label}: apiVersion is missing"))?
        .to_owned();
    let kind = str_field(&value, "kind")
        .ok_or_else(|| format!("{label}: kind is missing"))?
        .to_owned();
    let metadata = value.get("metadata");
    let name = metadata
        .and_then(|m| str_field(m, "name"))
        .unwrap_or("")
        .to_owned();
    let namespace = metadata
        .and_then(|m| str_field(m, "namespace"))
        .unwrap_or("default")
        .to_owned();
    let label = format!("{label} ({kind} {name})");

    if kind == "List" {
        let items = match value {
            Value::Object(mut map) => map.remove("items"),
            _ => None,
        };
        let Some(Value::Array(items)) = items else {
            return Err(format!("{label}: a List needs an items array"));
        };
        for (i, item) in items.into_iter().enumerate() {
            document(item, &format!("{label} item {}", i + 1), out)?;
        }
        return Ok(());
    }

    let object = match (api_version.as_str(), kind.as_str()) {
        ("networking.k8s.io/v1", "Ingress") => typed::<Ingress>(value, &label)?.into(),
        ("networking.k8s.io/v1", "IngressClass") => typed::<IngressClass>(value, &label)?.into(),
        ("v1", "Service") => typed::<Service>(value, &label)?.into(),
        ("v1", "Secret") => merge_string_data(typed::<Secret>(value, &label)?).into(),
        ("v1", "ConfigMap") => typed::<ConfigMap>(value, &label)?.into(),
        ("discovery.k8s.io/v1", "EndpointSlice") => typed::<EndpointSlice>(value, &label)?.into(),
        (_, "Ingress" | "IngressClass") => {
            return Err(format!(
                "{label}: apiVersion {api_version} is not supported; use networking.k8s.io/v1"
            ));
        }
        (_, "EndpointSlice") => {
            return Err(format!(
                "{label}: apiVersion {api_version} is not supported; use discovery.k8s.io/v1"
            ));
        }
        _ => {
            out.skipped.push(format!("{kind} {namespace}/{name}"));
            return Ok(());
        }
    };
    let object = with_defaults(object, &label)?;
    out.objects.push(object);
    Ok(())
}

fn typed<T: DeserializeOwned>(value: Value, label: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        format!("{label}: field {path}: {}", e.inner())
    })
}

/// Requires a name, and puts namespaced objects without a namespace in `default`, as
/// `kubectl apply` does.
fn with_defaults(object: Object, label: &str) -> Result<Object, String> {
    let meta = object.metadata();
    if meta.name.as_deref().unwrap_or("").is_empty() {
        return Err(format!("{label}: metadata.name is required"));
    }
    if !object.kind().is_namespaced() || meta.namespace.is_some() {
        return Ok(object);
    }
    fn set<T: Clone>(o: &std::sync::Arc<T>, f: impl FnOnce(&mut T)) -> std::sync::Arc<T> {
        let mut owned = (**o).clone();
        f(&mut owned);
        std::sync::Arc::new(owned)
    }
    let default = || Some("default".to_owned());
    Ok(match &object {
        Object::Ingress(o) => Object::Ingress(set(o, |o| o.metadata.namespace = default())),
        Object::Service(o) => Object::Service(set(o, |o| o.metadata.namespace = default())),
        Object::EndpointSlice(o) => {
            Object::EndpointSlice(set(o, |o| o.metadata.namespace = default()))
        }
        Object::Secret(o) => Object::Secret(set(o, |o| o.metadata.namespace = default())),
        Object::ConfigMap(o) => Object::ConfigMap(set(o, |o| o.metadata.namespace = default())),
        Object::IngressClass(_) => object,
    })
}

/// The API server merges `stringData` into `data` on write; files skip that step, so it is
/// done here and everything downstream reads `data` only.
fn merge_string_data(mut secret: Secret) -> Secret {
    if let Some(strings) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(Default::default);
        for (k, v) in strings {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
    secret
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Result<ParsedFile, ParseError> {
        parse_manifest(Path::new("x.yaml"), text)
    }

    #[test]
    fn multi_document_yaml_with_other_kinds_skipped() {
        let parsed = yaml(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n\
             ---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n\
             ---\n\
             # only a comment\n\
             ---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: a, namespace: shop}\n\
             spec: {rules: [{host: x.com}]}\n",
        )
        .unwrap();
        assert_eq!(parsed.objects.len(), 2);
        assert_eq!(parsed.skipped, ["Deployment shop/web"]);
        assert_eq!(parsed.objects[0].object_ref().to_string(), "default/web");
        assert_eq!(parsed.objects[1].object_ref().to_string(), "shop/a");
    }

    #[test]
    fn thousands_of_documents_in_one_file() {
        // Past serde-saphyr's default budget of 1,024 documents and 250,000 nodes.
        let count = 2_000;
        let mut documents: Vec<String> = (0..count)
            .map(|i| {
                format!(
                    "apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: shop}}\n\
                     spec: {{ports: [{{port: 80}}]}}\n"
                )
            })
            .collect();
        let nodes = vec!["0"; 260_000].join(",");
        documents.push(format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: big}}\nspec: [{nodes}]\n"
        ));
        let parsed = yaml(&documents.join("---\n")).unwrap();
        assert_eq!(parsed.objects.len(), count);
        assert_eq!(
            parsed.objects[count - 1].object_ref().to_string(),
            format!("shop/s{}", count - 1)
        );
        assert_eq!(parsed.skipped, ["Pod default/big"]);
    }

    #[test]
    fn alias_expansion_is_still_bounded() {
        // A file large enough that the node and event budgets, which grow with the text,
        // would let the expansion run far: only the crate's alias and anchor limits, which
        // do not grow, stand in the way.
        let mut text = format!("pad: {}\n", "x".repeat(4 << 20));
        // Each level doubles the one before: 2^30 copies of `a` if expanded in full.
        text.push_str("l0: &l0 [a, a]\n");
        for level in 1..=30 {
            let prev = level - 1;
            text.push_str(&format!("l{level}: &l{level} [*l{prev}, *l{prev}]\n"));
        }
        let err = yaml(&text).unwrap_err().to_string().to_lowercase();
        assert!(
            err.contains("anchor") || err.contains("alias"),
            "refused by an alias or anchor limit, not a size budget: {err}"
        );
    }

    #[test]
    fn json_object_and_list() {
        let parsed = parse_manifest(
            Path::new("x.json"),
            r#"{"apiVersion":"v1","kind":"List","items":[
                {"apiVersion":"networking.k8s.io/v1","kind":"IngressClass",
                 "metadata":{"name":"vestibule"},"spec":{"controller":"c"}},
                {"apiVersion":"v1","kind":"Service","metadata":{"name":"s","namespace":"n"}}]}"#,
        )
        .unwrap();
        let names: Vec<String> = parsed
            .objects
            .iter()
            .map(|o| o.object_ref().to_string())
            .collect();
        assert_eq!(names, ["vestibule", "n/s"]);
    }

    #[test]
    fn errors_name_the_document_and_field() {
        let err = yaml(
            "apiVersion: v1\nkind: Service\nmetadata: {name: ok}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\n\
             spec: {rules: [{host: 5, http: {paths: []}}]}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("document 2 (Ingress web): field spec.rules[0].host:"),
            "{err}"
        );
    }

    #[test]
    fn errors_are_one_line_whatever_the_file_holds() {
        let err = yaml(
            "apiVersion: \"networking.k8s.io/v2\\nX\"\nkind: Ingress\n\
             metadata: {name: \"a\\r\\nb\"}\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "document 1 (Ingress a\\r\\nb): apiVersion networking.k8s.io/v2\\nX is not \
             supported; use networking.k8s.io/v1"
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let err = yaml("a: [1, 2\n").unwrap_err().to_string();
        assert!(err.contains("line"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn refusals() {
        let cases = [
            (
                "kind: Service\nmetadata: {name: x}\n",
                "apiVersion is missing",
            ),
            ("apiVersion: v1\nmetadata: {name: x}\n", "kind is missing"),
            (
                "apiVersion: v1\nkind: Service\nmetadata: {}\n",
                "metadata.name is required",
            ),
            (
                "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: x}\n",
                "use networking.k8s.io/v1",
            ),
            ("- 1\n- 2\n", "expected a Kubernetes object"),
        ];
        for (text, want) in cases {
            let err = yaml(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn secret_string_data_is_merged_into_data() {
        let parsed = yaml(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\n\
             stringData: {tls.crt: CERT}\ndata: {tls.key: S0VZ}\n",
        )
        .unwrap();
        let Object::Secret(secret) = &parsed.objects[0] else {
            panic!("not a secret");
        };
        let data = secret.data.as_ref().unwrap();
        assert_eq!(data["tls.crt"].0, b"CERT");
        assert_eq!(data["tls.key"].0, b"KEY");
        assert!(secret.string_data.is_none());
    }
}
