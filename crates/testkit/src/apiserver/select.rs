//! Label and field selectors as the API server parses them from list and watch queries.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    /// JSON pointer into the object.
    pointer: &'static str,
    value: String,
    negated: bool,
}

/// Which objects a list or watch sees: a namespace (None for all) and both selectors.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    namespace: Option<String>,
    labels: Vec<LabelRequirement>,
    fields: Vec<FieldRequirement>,
}

impl Filter {
    /// Parses the selectors; the error is the message of a 400 BadRequest.
    pub(crate) fn parse(
        namespace: Option<String>,
        label_selector: Option<&str>,
        field_selector: Option<&str>,
        plural: &str,
    ) -> Result<Filter, String> {
        Ok(Filter {
            namespace,
            labels: match label_selector {
                Some(s) => parse_labels(s)?,
                None => Vec::new(),
            },
            fields: match field_selector {
                Some(s) => parse_fields(s, plural)?,
                None => Vec::new(),
            },
        })
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && str_at(object, "/metadata/namespace") != ns
        {
            return false;
        }
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        let labels_match = self.labels.iter().all(|req| match req {
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::NotExists(k) => label(k).is_none(),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
        });
        labels_match
            && self
                .fields
                .iter()
                .all(|f| (str_at(object, f.pointer) == f.value) != f.negated)
    }
}

fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Splits on commas outside parentheses, so `k in (a,b),x=y` is two terms.
fn split_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_labels(selector: &str) -> Result<Vec<LabelRequirement>, String> {
    split_terms(selector)
        .into_iter()
        .map(|term| {
            let bad = || format!("unable to parse requirement: invalid label selector: {term:?}");
            if let Some(key) = term.strip_prefix('!') {
                return Ok(LabelRequirement::NotExists(key.trim().to_owned()));
            }
            if let Some(open) = term.find('(') {
                let values = term[open + 1..]
                    .strip_suffix(')')
                    .ok_or_else(bad)?
                    .split(',')
                    .map(|v| v.trim().to_owned())
                    .collect();
                let head = term[..open].trim_end();
                if let Some(key) = head.strip_suffix("notin") {
                    return Ok(LabelRequirement::NotIn(key.trim().to_owned(), values));
                }
                if let Some(key) = head.strip_suffix("in") {
                    return Ok(LabelRequirement::In(key.trim().to_owned(), values));
                }
                return Err(bad());
            }
            if let Some((k, v)) = term.split_once("!=") {
                return Ok(LabelRequirement::NotEquals(
                    k.trim().to_owned(),
                    v.trim().to_owned(),
                ));
            }
            if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                return Ok(LabelRequirement::Equals(
                    k.trim().to_owned(),
                    v.trim().to_owned(),
                ));
            }
            if term.contains(char::is_whitespace) {
                return Err(bad());
            }
            Ok(LabelRequirement::Exists(term.to_owned()))
        })
        .collect()
}

fn parse_fields(selector: &str, plural: &str) -> Result<Vec<FieldRequirement>, String> {
    split_terms(selector)
        .into_iter()
        .map(|term| {
            let (key, value, negated) = if let Some((k, v)) = term.split_once("!=") {
                (k, v, true)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, v, false)
            } else {
                return Err(format!(
                    "invalid selector: '{term}'; can't understand '{term}'"
                ));
            };
            let pointer = match (key.trim(), plural) {
                ("metadata.name", _) => "/metadata/name",
                ("metadata.namespace", _) => "/metadata/namespace",
                ("type", "secrets") => "/type",
                (other, _) => return Err(format!("field label not supported: {other}")),
            };
            Ok(FieldRequirement {
                pointer,
                value: value.trim().to_owned(),
                negated,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::Filter;

    fn object() -> serde_json::Value {
        json!({"metadata": {"name": "a", "namespace": "ns",
            "labels": {"app": "web", "tier": "front"}}, "type": "kubernetes.io/tls"})
    }

    fn labels(selector: &str) -> bool {
        Filter::parse(None, Some(selector), None, "secrets")
            .unwrap()
            .matches(&object())
    }

    #[test]
    fn label_selector_operators() {
        assert!(labels("app=web"));
        assert!(labels("app==web,tier"));
        assert!(!labels("app!=web"));
        assert!(labels("app!=db"));
        assert!(labels("!missing"));
        assert!(!labels("!app"));
        assert!(labels("app in (db, web),tier notin (back)"));
        assert!(!labels("app notin (web)"));
        assert!(labels("missing notin (web)"));
        assert!(labels(""));
    }

    #[test]
    fn field_selectors_know_only_some_fields() {
        let f = |s: &str, plural: &str| Filter::parse(None, None, Some(s), plural);
        assert!(
            f("type=kubernetes.io/tls", "secrets")
                .unwrap()
                .matches(&object())
        );
        assert!(
            !f("type!=kubernetes.io/tls", "secrets")
                .unwrap()
                .matches(&object())
        );
        assert!(
            f("metadata.name=a,metadata.namespace==ns", "services")
                .unwrap()
                .matches(&object())
        );
        assert!(f("type=x", "services").is_err());
        assert!(f("spec.x=y", "secrets").is_err());
    }

    #[test]
    fn namespace_restricts() {
        let f = Filter::parse(Some("other".into()), None, None, "secrets").unwrap();
        assert!(!f.matches(&object()));
    }
}
