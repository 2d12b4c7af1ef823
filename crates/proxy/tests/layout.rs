//! The crate's layout, held in code rather than in a review note: no file imports a file
//! that imports it back, directly or round a loop, and no function of the request path is
//! longer than a screen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// The longest a function of the request path (`src/request/`) may be, in lines.
const LONGEST_PHASE: usize = 80;

/// Every source file of the crate, with its text, test modules left out.
fn sources() -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_some_and(|n| n != "tests.rs")
            {
                let text = std::fs::read_to_string(&path).unwrap();
                out.insert(path, without_comments(&without_tests(&text)));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(Path::new(SRC), &mut out);
    out
}

/// The text before the file's unit tests, which by this codebase's habit come last.
fn without_tests(text: &str) -> String {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_owned(),
        None => text.to_owned(),
    }
}

/// The text without `//` comments, whose paths import nothing.
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| line.split_once("//").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module path of a file: `src/a/b.rs` and `src/a/b/mod.rs` are `["a", "b"]`.
fn module_of(file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(SRC).unwrap();
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    match last.as_str() {
        "lib.rs" | "mod.rs" => {}
        name => parts.push(name.trim_end_matches(".rs").to_owned()),
    }
    parts
}

/// The file that defines the module at `module`, or the nearest ancestor that exists: what
/// a path through `module` imports from.
fn file_of(module: &[String]) -> PathBuf {
    let mut dir = PathBuf::from(SRC);
    let mut found = dir.join("lib.rs");
    for segment in module {
        let as_file = dir.join(format!("{segment}.rs"));
        let as_dir = dir.join(segment).join("mod.rs");
        if as_file.exists() {
            found = as_file;
        } else if as_dir.exists() {
            found = as_dir;
        } else {
            break;
        }
        dir = dir.join(segment);
    }
    found
}

/// The module paths `text` names, from the module `here`: `crate::a::b`, `super::c`,
/// `self::d`, in `use` items and in code alike.
fn named_modules(text: &str, here: &[String], is_mod_file: bool) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.contains("::"))
        .collect();
    for word in words {
        let mut segments = word.split("::").filter(|s| !s.is_empty());
        let Some(first) = segments.next() else {
            continue;
        };
        let mut base: Vec<String> = match first {
            "crate" => Vec::new(),
            "self" => here.to_vec(),
            "super" => {
                let mut up = here.to_vec();
                up.pop();
                let mut rest = segments.clone().peekable();
                while rest.peek() == Some(&"super") {
                    up.pop();
                    rest.next();
                    segments.next();
                }
                up
            }
            // A path through a child module declared in this file.
            child if is_mod_file && module_exists(&child_path(here, child)) => {
                child_path(here, child)
            }
            _ => continue,
        };
        base.extend(segments.map(str::to_owned));
        out.push(base);
    }
    out
}

/// Whether the module at `module` has a file of its own.
fn module_exists(module: &[String]) -> bool {
    let mut dir = PathBuf::from(SRC);
    for segment in &module[..module.len().saturating_sub(1)] {
        dir = dir.join(segment);
    }
    let Some(last) = module.last() else {
        return true;
    };
    dir.join(format!("{last}.rs")).exists() || dir.join(last).join("mod.rs").exists()
}

fn child_path(here: &[String], child: &str) -> Vec<String> {
    let mut path = here.to_vec();
    path.push(child.to_owned());
    path
}

/// Which files each file imports.
fn imports() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut graph = BTreeMap::new();
    for (file, text) in sources() {
        let here = module_of(&file);
        let is_mod_file = file.ends_with("mod.rs") || file.ends_with("lib.rs");
        let imported: BTreeSet<PathBuf> = named_modules(&text, &here, is_mod_file)
            .iter()
            .map(|module| file_of(module))
            .filter(|target| *target != file)
            .collect();
        graph.insert(file, imported);
    }
    graph
}

/// A loop through `from`, if there is one: the files in order.
fn loop_through(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>, from: &Path) -> Option<Vec<PathBuf>> {
    let mut stack = vec![(from.to_path_buf(), vec![from.to_path_buf()])];
    let mut seen = BTreeSet::new();
    while let Some((at, trail)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            if next == from {
                return Some(trail);
            }
            if seen.insert(next.clone()) {
                let mut longer = trail.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let graph = imports();
    assert!(graph.len() > 40, "the walk found the crate's files");
    let loops: Vec<String> = graph
        .keys()
        .filter_map(|file| loop_through(&graph, file))
        .map(|trail| {
            trail
                .iter()
                .map(|f| f.strip_prefix(SRC).unwrap().display().to_string())
                .collect::<Vec<_>>()
                .join(" -> ")
        })
        .collect();
    assert!(loops.is_empty(), "import loops:\n{}", loops.join("\n"));
}

#[test]
fn the_checker_sees_a_loop() {
    let mut graph = imports();
    let a = PathBuf::from(SRC).join("fields.rs");
    let b = PathBuf::from(SRC).join("respond.rs");
    assert!(loop_through(&graph, &a).is_none());
    graph.get_mut(&a).unwrap().insert(b.clone());
    graph.get_mut(&b).unwrap().insert(a.clone());
    assert_eq!(loop_through(&graph, &a), Some(vec![a, b]));
}

/// Each function's first line and length, in lines, from its signature to its closing brace.
fn functions(text: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let is_fn = [
            "fn ",
            "pub(super) fn ",
            "pub(crate) fn ",
            "async fn ",
            "pub(super) async fn ",
            "pub(crate) async fn ",
        ]
        .iter()
        .any(|p| trimmed.starts_with(p));
        if !is_fn {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let closing = format!("{}}}", " ".repeat(indent));
        if let Some(end) = lines[start..].iter().position(|l| *l == closing) {
            out.push((start + 1, trimmed.to_owned(), end + 1));
        }
    }
    out
}

#[test]
fn functions_of_the_request_path_fit_on_a_screen() {
    let mut long = Vec::new();
    for (file, text) in sources() {
        if !file.starts_with(Path::new(SRC).join("request")) {
            continue;
        }
        for (line, signature, length) in functions(&text) {
            if length > LONGEST_PHASE {
                long.push(format!(
                    "{}:{line} {signature} ({length} lines)",
                    file.display()
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "longer than {LONGEST_PHASE} lines:\n{}",
        long.join("\n")
    );
}
