//! The objects the compile-driven targets start from (`fixtures/objects.yaml`), read once, and
//! the options they compile with.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::networking::v1::Ingress;
use vestibule_translate::{Options, Snapshot};

pub const NAMESPACE: &str = "default";
pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

fn fixture() -> &'static Snapshot {
    static OBJECTS: OnceLock<Snapshot> = OnceLock::new();
    OBJECTS.get_or_init(|| {
        let text = include_str!("../../fixtures/objects.yaml");
        match vestibule_controller::parse_manifest(Path::new("objects.yaml"), text) {
            Ok(parsed) => Snapshot::from_objects(parsed.objects),
            Err(e) => panic!("fixtures/objects.yaml: {e}"),
        }
    })
}

/// The fixture, with the Ingress `web` annotated with `annotations` (full keys) and the
/// Secret `users` holding `auth` as its htpasswd file, when given.
pub fn snapshot(annotations: BTreeMap<String, String>, auth: Option<&[u8]>) -> Snapshot {
    let mut snapshot = fixture().clone();
    for ingress in &mut snapshot.ingresses {
        if ingress.metadata.name.as_deref() == Some("web") {
            let mut annotated: Ingress = (**ingress).clone();
            annotated.metadata.annotations = Some(annotations.clone());
            *ingress = Arc::new(annotated);
        }
    }
    if let Some(auth) = auth {
        for secret in &mut snapshot.secrets {
            if secret.metadata.name.as_deref() == Some("users") {
                let mut changed = (**secret).clone();
                let data = changed.data.get_or_insert_with(BTreeMap::new);
                data.insert("auth".to_owned(), k8s_openapi::ByteString(auth.to_vec()));
                *secret = Arc::new(changed);
            }
        }
    }
    snapshot
}

pub fn options() -> &'static Options {
    static OPTIONS: OnceLock<Options> = OnceLock::new();
    OPTIONS.get_or_init(|| Options {
        watch_ingress_without_class: true,
        default_backend_service: Some((NAMESPACE.to_owned(), "errors".to_owned())),
        enable_ssl_passthrough: true,
        global_allowed_response_headers: vec!["X-Allowed".to_owned()],
        ..Options::default()
    })
}
