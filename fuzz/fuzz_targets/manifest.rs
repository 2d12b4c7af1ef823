//! Manifest files on any input, read as YAML and as JSON: the parser must answer without
//! panicking or hanging, a refusal is one line that says what (the file's path is added by
//! the source that read it), and the objects of a file it reads, written out again as a JSON
//! `List`, read back the same.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vestibule_controller::parse_manifest;
use vestibule_translate::Object;

fn json(object: &Object) -> serde_json::Value {
    let value = match object {
        Object::IngressClass(o) => serde_json::to_value(&**o),
        Object::Ingress(o) => serde_json::to_value(&**o),
        Object::Service(o) => serde_json::to_value(&**o),
        Object::EndpointSlice(o) => serde_json::to_value(&**o),
        Object::Secret(o) => serde_json::to_value(&**o),
        Object::ConfigMap(o) => serde_json::to_value(&**o),
    };
    match value {
        Ok(value) => value,
        Err(e) => panic!("{}: does not serialise: {e}", object.object_ref()),
    }
}

fn check(path: &str, text: &str) {
    let parsed = match parse_manifest(Path::new(path), text) {
        Ok(parsed) => parsed,
        Err(e) => {
            let message = e.to_string();
            assert!(
                !message.is_empty() && !message.contains('\n'),
                "{message:?}"
            );
            return;
        }
    };
    for object in &parsed.objects {
        let meta = object.metadata();
        assert!(meta.name.as_deref().is_some_and(|n| !n.is_empty()));
        if object.kind().is_namespaced() {
            assert!(meta.namespace.is_some(), "{}", object.object_ref());
        }
        if let Object::Secret(secret) = object {
            assert!(
                secret.string_data.is_none(),
                "stringData is merged into data"
            );
        }
    }
    let list = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": parsed.objects.iter().map(json).collect::<Vec<_>>(),
    });
    let again = match parse_manifest(Path::new("again.json"), &list.to_string()) {
        Ok(again) => again,
        Err(e) => panic!("the objects of {path}, written out, do not read back: {e}"),
    };
    assert!(
        again.objects == parsed.objects,
        "the objects of {path} read back otherwise"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check("fuzz.yaml", text);
    check("fuzz.json", text);
});
