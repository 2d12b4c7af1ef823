//! The input of a compile: every object a source currently holds, by kind.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::report::{Kind, ObjectRef};

/// One Kubernetes object of a kind Vestibule reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    IngressClass(Arc<IngressClass>),
    Ingress(Arc<Ingress>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Secret(Arc<Secret>),
    /// Read for `auth-proxy-set-headers`, `custom-headers` and the header flags.
    ConfigMap(Arc<ConfigMap>),
}

impl Object {
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::IngressClass(o) => &o.metadata,
            Object::Ingress(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Object::IngressClass(_) => Kind::IngressClass,
            Object::Ingress(_) => Kind::Ingress,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Secret(_) => Kind::Secret,
            Object::ConfigMap(_) => Kind::ConfigMap,
        }
    }

    /// Kind, namespace (`default` when unset, empty for cluster-scoped kinds) and name.
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::of(self.kind(), self.metadata())
    }
}

macro_rules! object_from {
    ($($ty:ident),*) => {$(
        impl From<$ty> for Object {
            fn from(o: $ty) -> Object {
                Object::$ty(Arc::new(o))
            }
        }
        impl From<Arc<$ty>> for Object {
            fn from(o: Arc<$ty>) -> Object {
                Object::$ty(o)
            }
        }
    )*};
}
object_from!(
    IngressClass,
    Ingress,
    Service,
    EndpointSlice,
    Secret,
    ConfigMap
);

/// Every object of the kinds Vestibule reads, as one source holds them at one moment.
///
/// A source holds at most one object per kind, namespace and name; should the same key appear
/// twice anyway, the compile uses the first and reports the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub ingress_classes: Vec<Arc<IngressClass>>,
    pub ingresses: Vec<Arc<Ingress>>,
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    pub secrets: Vec<Arc<Secret>>,
    pub config_maps: Vec<Arc<ConfigMap>>,
}

impl Snapshot {
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for object in objects {
            snapshot.push(object);
        }
        snapshot
    }

    pub fn push(&mut self, object: Object) {
        match object {
            Object::IngressClass(o) => self.ingress_classes.push(o),
            Object::Ingress(o) => self.ingresses.push(o),
            Object::Service(o) => self.services.push(o),
            Object::EndpointSlice(o) => self.endpoint_slices.push(o),
            Object::Secret(o) => self.secrets.push(o),
            Object::ConfigMap(o) => self.config_maps.push(o),
        }
    }

    /// Number of objects of every kind together.
    pub fn len(&self) -> usize {
        self.ingress_classes.len()
            + self.ingresses.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.secrets.len()
            + self.config_maps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
