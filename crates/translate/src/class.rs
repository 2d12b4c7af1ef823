//! Which Ingresses are ours: IngressClass, the legacy class annotation, and the default class.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::compile::Options;

const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// The IngressClasses this controller owns, found once per compile.
pub(crate) struct Classes<'s> {
    by_name: BTreeMap<&'s str, &'s IngressClass>,
    controller: &'s str,
    /// Name of one of our IngressClasses marked as the cluster default, if any.
    our_default: Option<&'s str>,
}

impl<'s> Classes<'s> {
    pub(crate) fn new(classes: &'s [std::sync::Arc<IngressClass>], options: &'s Options) -> Self {
        let mut by_name = BTreeMap::new();
        for class in classes {
            if let Some(name) = class.metadata.name.as_deref() {
                by_name.entry(name).or_insert(&**class);
            }
        }
        let controller = options.controller_class.as_str();
        let our_default = by_name
            .iter()
            .find(|(_, class)| is_ours(class, controller) && is_default(class))
            .map(|(name, _)| *name);
        Classes {
            by_name,
            controller,
            our_default,
        }
    }

    /// `Ok(why)` when the Ingress is ours, `Err(why not)` otherwise.
    pub(crate) fn decide(&self, ingress: &Ingress, options: &Options) -> Result<String, String> {
        let class_name = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref());
        let annotation = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
            .map(String::as_str);
        // spec.ingressClassName wins over the legacy annotation when both are set.
        if let Some(name) = class_name {
            return match self.by_name.get(name) {
                Some(class) if is_ours(class, self.controller) => {
                    Ok(format!("IngressClass {name:?} names our controller"))
                }
                Some(class) => Err(format!(
                    "IngressClass {name:?} belongs to controller {:?}",
                    controller_of(class).unwrap_or("")
                )),
                None => Err(format!("IngressClass {name:?} does not exist")),
            };
        }
        if let Some(value) = annotation {
            return if value == options.ingress_class {
                Ok(format!("annotation {LEGACY_CLASS_ANNOTATION}={value:?}"))
            } else {
                Err(format!(
                    "annotation {LEGACY_CLASS_ANNOTATION}={value:?} is not {:?}",
                    options.ingress_class
                ))
            };
        }
        if let Some(default) = self.our_default {
            return Ok(format!(
                "no class, and our IngressClass {default:?} is the default"
            ));
        }
        if options.watch_ingress_without_class {
            return Ok("no class, and --watch-ingress-without-class is set".to_owned());
        }
        Err("no class, and none of our IngressClasses is the default".to_owned())
    }
}

fn controller_of(class: &IngressClass) -> Option<&str> {
    class.spec.as_ref().and_then(|s| s.controller.as_deref())
}

fn is_ours(class: &IngressClass, controller: &str) -> bool {
    controller_of(class) == Some(controller)
}

fn is_default(class: &IngressClass) -> bool {
    class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        .is_some_and(|v| v == "true")
}
