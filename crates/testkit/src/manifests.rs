//! A temporary manifests directory that tests write Kubernetes objects into as YAML.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Kubernetes objects serialised with their `apiVersion` and `kind`.
pub trait Manifest {
    fn to_yaml(&self) -> String;
}

fn yaml_of<T: Serialize>(api_version: &str, kind: &str, object: &T) -> String {
    let mut value = serde_json::to_value(object).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), api_version.into());
        map.insert("kind".into(), kind.into());
    }
    serde_saphyr::to_string(&value).unwrap_or_default()
}

macro_rules! manifest {
    ($ty:ty, $api:literal, $kind:literal) => {
        impl Manifest for $ty {
            fn to_yaml(&self) -> String {
                yaml_of($api, $kind, self)
            }
        }
    };
}

manifest!(
    k8s_openapi::api::networking::v1::Ingress,
    "networking.k8s.io/v1",
    "Ingress"
);
manifest!(
    k8s_openapi::api::networking::v1::IngressClass,
    "networking.k8s.io/v1",
    "IngressClass"
);
manifest!(k8s_openapi::api::core::v1::Service, "v1", "Service");
manifest!(k8s_openapi::api::core::v1::Secret, "v1", "Secret");
manifest!(
    k8s_openapi::api::discovery::v1::EndpointSlice,
    "discovery.k8s.io/v1",
    "EndpointSlice"
);

/// Joins objects into one multi-document YAML text.
pub fn yaml_documents(objects: &[&dyn Manifest]) -> String {
    objects
        .iter()
        .map(|o| o.to_yaml())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// A temporary directory of manifest files, removed when dropped.
#[derive(Debug)]
pub struct ManifestDir {
    dir: tempfile::TempDir,
}

impl ManifestDir {
    pub fn new() -> std::io::Result<ManifestDir> {
        Ok(ManifestDir {
            dir: tempfile::tempdir()?,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `objects` to `name` atomically (temporary file, then rename), as editors and
    /// ConfigMap volumes do.
    pub fn write(&self, name: &str, objects: &[&dyn Manifest]) -> std::io::Result<()> {
        self.write_raw(name, &yaml_documents(objects))
    }

    pub fn write_raw(&self, name: &str, text: &str) -> std::io::Result<()> {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.file(name))
    }

    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        std::fs::remove_file(self.file(name))
    }
}
