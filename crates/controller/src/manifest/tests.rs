//! The manifest source against real files: rescans, last-good-kept, deletes, duplicates,
//! ConfigMap-style symlink swaps, and live following through notify.

use std::time::Duration;

use super::*;

fn service(name: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: shop\n")
}

fn names(source: &ManifestSource) -> Vec<String> {
    let current = source.current();
    current
        .snapshot
        .services
        .iter()
        .map(|s| s.metadata.name.clone().unwrap_or_default())
        .collect()
}

fn problems(source: &ManifestSource) -> Vec<String> {
    source
        .current()
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn a_missing_root_fails_at_start() {
    let err = ManifestSource::open(vec!["/nonexistent/vestibule".into()]).unwrap_err();
    assert!(
        err.to_string().starts_with("/nonexistent/vestibule: "),
        "{err}"
    );
}

#[test]
fn directories_are_read_recursively_skipping_hidden_and_other_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), service("a")).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/b.yml"), service("b")).unwrap();
    std::fs::write(
        dir.path().join("c.json"),
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"c","namespace":"shop"}}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), service("hidden")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
    std::fs::write(dir.path().join("a.yaml.swp"), "garbage").unwrap();
    let source = ManifestSource::open(vec![dir.path().into()]).unwrap();
    assert_eq!(names(&source), ["a", "c", "b"]);
    assert!(problems(&source).is_empty());
}

#[test]
fn a_file_root_is_read_whatever_its_extension() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.txt");
    std::fs::write(&file, service("a")).unwrap();
    let source = ManifestSource::open(vec![file]).unwrap();
    assert_eq!(names(&source), ["a"]);
}

#[test]
fn rescan_reports_change_only_when_something_changed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.yaml");
    std::fs::write(&file, service("a")).unwrap();
    let mut source = ManifestSource::open(vec![dir.path().into()]).unwrap();
    assert!(!source.rescan());
    // Same content written again: new mtime, same objects.
    std::fs::write(&file, service("a")).unwrap();
    assert!(!source.rescan());
    std::fs::write(&file, service("b")).unwrap();
    assert!(source.rescan());
    assert_eq!(names(&source), ["b"]);
}

#[test]
fn a_broken_file_keeps_its_last_good_objects_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.yaml");
    std::fs::write(&file, service("a")).unwrap();
    std::fs::write(dir.path().join("b.yaml"), service("b")).unwrap();
    let mut source = ManifestSource::open(vec![dir.path().into()]).unwrap();
    std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: {name: [\n").unwrap();
    assert!(source.rescan());
    assert_eq!(names(&source), ["a", "b"]);
    let p = problems(&source);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("a.yaml: ") && p[0].contains("line"), "{p:?}");
    assert!(p[0].contains("stay in use"), "{p:?}");
    // Fixed: the new objects replace the old and the problem goes away.
    std::fs::write(&file, service("a2")).unwrap();
    assert!(source.rescan());
    assert_eq!(names(&source), ["a2", "b"]);
    assert!(problems(&source).is_empty());
}

#[test]
fn a_file_broken_from_the_start_contributes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "kind: [").unwrap();
    std::fs::write(dir.path().join("good.yaml"), service("good")).unwrap();
    let source = ManifestSource::open(vec![dir.path().into()]).unwrap();
    assert_eq!(names(&source), ["good"]);
    assert_eq!(problems(&source).len(), 1);
}

#[test]
fn a_deleted_file_removes_its_objects() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), service("a")).unwrap();
    std::fs::write(dir.path().join("b.yaml"), service("b")).unwrap();
    let mut source = ManifestSource::open(vec![dir.path().into()]).unwrap();
    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    assert!(source.rescan());
    assert_eq!(names(&source), ["b"]);
}

#[test]
fn an_object_defined_twice_keeps_the_first_file_and_reports_the_second() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("1.yaml"), service("a")).unwrap();
    std::fs::write(dir.path().join("2.yaml"), service("a")).unwrap();
    let source = ManifestSource::open(vec![dir.path().into()]).unwrap();
    assert_eq!(names(&source), ["a"]);
    let p = problems(&source);
    assert_eq!(p.len(), 1);
    assert!(
        p[0].contains("2.yaml: Service shop/a is also defined in"),
        "{p:?}"
    );
}

#[cfg(unix)]
#[test]
fn configmap_volume_symlink_swap_is_followed() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("..v1")).unwrap();
    std::fs::write(root.join("..v1/svc.yaml"), service("one")).unwrap();
    symlink("..v1", root.join("..data")).unwrap();
    symlink("..data/svc.yaml", root.join("svc.yaml")).unwrap();
    let mut source = ManifestSource::open(vec![root.into()]).unwrap();
    assert_eq!(names(&source), ["one"]);
    // The kubelet writes a new directory and swaps `..data` atomically.
    std::fs::create_dir(root.join("..v2")).unwrap();
    std::fs::write(root.join("..v2/svc.yaml"), service("two")).unwrap();
    symlink("..v2", root.join("..data.tmp")).unwrap();
    std::fs::rename(root.join("..data.tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..v1")).unwrap();
    assert!(source.rescan());
    assert_eq!(names(&source), ["two"]);
}

fn quick() -> Debounce {
    Debounce {
        holdoff: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
    }
}

async fn next_names(rx: &mut watch::Receiver<Arc<SourceSnapshot>>) -> Vec<String> {
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("no change seen within 10 s")
        .unwrap();
    rx.borrow_and_update()
        .snapshot
        .services
        .iter()
        .map(|s| s.metadata.name.clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn changes_are_followed_live_including_atomic_renames() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.yaml");
    std::fs::write(&file, service("a")).unwrap();
    let source = ManifestSource::open(vec![dir.path().into()]).unwrap();
    let (tx, mut rx) = watch::channel(Arc::new(source.current()));
    let task = tokio::spawn(source.watch(tx, quick()));

    std::fs::write(dir.path().join("b.yaml"), service("b")).unwrap();
    assert_eq!(next_names(&mut rx).await, ["a", "b"]);

    // An editor's save: write a temporary file, rename it over the original.
    let tmp = dir.path().join(".a.yaml.tmp");
    std::fs::write(&tmp, service("a-edited")).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    assert_eq!(next_names(&mut rx).await, ["a-edited", "b"]);

    std::fs::remove_file(&file).unwrap();
    assert_eq!(next_names(&mut rx).await, ["b"]);
    drop(rx);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the source stops when nobody listens")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_single_file_root_survives_atomic_renames() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("only.yaml");
    std::fs::write(&file, service("v1")).unwrap();
    let source = ManifestSource::open(vec![file.clone()]).unwrap();
    let (tx, mut rx) = watch::channel(Arc::new(source.current()));
    let _task = tokio::spawn(source.watch(tx, quick()));
    for version in ["v2", "v3"] {
        let tmp = dir.path().join("only.yaml.new");
        std::fs::write(&tmp, service(version)).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert_eq!(next_names(&mut rx).await, [version]);
    }
}
