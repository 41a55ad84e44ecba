//! The house rules of `src/`, checked by reading the sources (see docs/architecture.md):
//! - no source file is longer than 600 lines, its `#[cfg(test)]` module left out;
//! - the module graph has no cycle, neither between top-level modules nor between files;
//! - top-level modules depend only on the modules below them (the allowed arrows are listed in
//!   [`ALLOWED`]); `precondition` and `identity` import nothing of the crate;
//! - every source file opens with a module doc comment (`//!`).
//!
//! A dependency is any path that names another module's file: `crate::…`, `super::…`, `self::…`,
//! or a child module's name, in `use` lines and in code. Two forms are not dependencies: a
//! `mod child;` declaration, and a `pub use` in a folder's `mod.rs` (or `lib.rs`) that re-exports a
//! child (the folder's public face, not something the folder relies on).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

/// Top-level module → the top-level modules it may import.
const ALLOWED: &[(&str, &[&str])] = &[
    ("precondition", &[]),
    ("identity", &[]),
    ("demo", &[]),
    ("config", &["precondition", "identity"]),
    ("store", &["precondition", "identity"]),
    ("telemetry", &["precondition"]),
    ("upstream", &["config"]),
    (
        "proxy",
        &[
            "config",
            "store",
            "telemetry",
            "upstream",
            "identity",
            "precondition",
        ],
    ),
    (
        "app",
        &[
            "proxy",
            "config",
            "store",
            "telemetry",
            "upstream",
            "identity",
            "precondition",
        ],
    ),
];

/// A source file: its module path (empty for the crate root) and its text without tests.
struct Source {
    module: Vec<String>,
    text: String,
    is_folder_root: bool,
}

fn sources() -> BTreeMap<PathBuf, Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap().to_path_buf();
            if rel == Path::new("main.rs") {
                continue; // the binary: not part of the library's graph
            }
            let mut module: Vec<String> = rel
                .with_extension("")
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            let last = module.last().cloned().unwrap_or_default();
            let is_folder_root = last == "mod" || last == "lib";
            if is_folder_root {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            out.insert(
                rel,
                Source {
                    module,
                    text: without_tests(&text),
                    is_folder_root,
                },
            );
        }
    }
    out
}

/// The text before the file's `#[cfg(test)]` module (by convention, the last item of a file).
fn without_tests(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let cut = lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod "))
        .unwrap_or(lines.len());
    lines[..cut].join("\n")
}

/// Code lines only: comments (line and doc comments) and string contents dropped.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        let mut in_str = false;
        let mut prev = ' ';
        for c in line.chars() {
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str {
                out.push(c);
            }
            prev = if prev == '\\' && c == '\\' { ' ' } else { c };
        }
        out.push('\n');
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Reads a path starting at `i` (`a::b::{c, d::e}`), pushing every full path it names.
fn read_paths(
    code: &[char],
    mut i: usize,
    prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    let mut path = prefix;
    loop {
        while i < code.len() && code[i].is_whitespace() {
            i += 1;
        }
        if i < code.len() && code[i] == '{' {
            i += 1;
            loop {
                i = read_paths(code, i, path.clone(), out);
                while i < code.len() && code[i].is_whitespace() {
                    i += 1;
                }
                if i < code.len() && code[i] == ',' {
                    i += 1;
                    continue;
                }
                if i < code.len() && code[i] == '}' {
                    i += 1;
                }
                return i;
            }
        }
        let start = i;
        while i < code.len() && is_ident(code[i]) {
            i += 1;
        }
        if i == start {
            out.push(path);
            return i;
        }
        path.push(code[start..i].iter().collect());
        if code.get(i) == Some(&':') && code.get(i + 1) == Some(&':') {
            i += 2;
        } else {
            out.push(path);
            return i;
        }
    }
}

/// The module paths a file names, resolved against its own module path.
fn references(src: &Source) -> Vec<Vec<String>> {
    let code = code_of(&src.text);
    let children: BTreeSet<String> = code
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub(crate) ")
                .or(l.strip_prefix("pub "))
                .unwrap_or(l);
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .collect();
    let mut found = Vec::new();
    for line in code.lines() {
        let t = line.trim_start();
        if src.is_folder_root && (t.starts_with("pub use ") || t.starts_with("pub(crate) use ")) {
            continue; // a folder re-exporting its children
        }
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let boundary = i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == ':');
            if !boundary || !is_ident(chars[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let is_path = chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':');
            if !is_path {
                continue;
            }
            let base: Option<Vec<String>> = match word.as_str() {
                "crate" => Some(vec![]),
                "self" => Some(src.module.clone()),
                "super" => {
                    let mut m = src.module.clone();
                    let mut j = i;
                    m.pop();
                    while chars[j + 2..].starts_with(&['s', 'u', 'p', 'e', 'r', ':', ':']) {
                        m.pop();
                        j += 7;
                    }
                    i = j;
                    Some(m)
                }
                w if children.contains(w) => {
                    let mut m = src.module.clone();
                    m.push(w.to_string());
                    Some(m)
                }
                _ => None,
            };
            if let Some(base) = base {
                let mut paths = Vec::new();
                i = read_paths(&chars, i + 2, base, &mut paths);
                found.extend(paths);
            }
        }
    }
    found
}

/// The file of the longest prefix of `path` that is a module.
fn resolve<'a>(
    path: &[String],
    modules: &'a BTreeMap<Vec<String>, PathBuf>,
) -> Option<&'a PathBuf> {
    (0..=path.len())
        .rev()
        .find_map(|n| modules.get(&path[..n].to_vec()))
}

fn graph() -> (
    BTreeMap<PathBuf, Source>,
    BTreeMap<PathBuf, BTreeSet<PathBuf>>,
) {
    let files = sources();
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|(p, s)| (s.module.clone(), p.clone()))
        .collect();
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (file, src) in &files {
        let e = edges.entry(file.clone()).or_default();
        for path in references(src) {
            if let Some(target) = resolve(&path, &modules) {
                if target != file {
                    e.insert(target.clone());
                }
            }
        }
    }
    (files, edges)
}

/// One cycle of the graph, if it has any.
fn find_cycle<N: Ord + Clone>(edges: &BTreeMap<N, BTreeSet<N>>) -> Option<Vec<N>> {
    fn visit<N: Ord + Clone>(
        n: &N,
        edges: &BTreeMap<N, BTreeSet<N>>,
        state: &mut BTreeMap<N, u8>,
        stack: &mut Vec<N>,
    ) -> Option<Vec<N>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let at = stack.iter().position(|x| x == n).unwrap();
                let mut cycle = stack[at..].to_vec();
                cycle.push(n.clone());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if let Some(c) = visit(n, edges, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

fn top(file: &Path) -> String {
    file.with_extension("")
        .iter()
        .next()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn no_source_file_is_longer_than_the_limit_without_its_tests() {
    let long: Vec<String> = sources()
        .iter()
        .filter(|(_, s)| s.text.lines().count() > MAX_LINES)
        .map(|(p, s)| format!("{} ({} lines)", p.display(), s.text.lines().count()))
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}

#[test]
fn every_source_file_says_what_it_owns() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for file in sources().keys() {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(
            text.trim_start().starts_with("//!"),
            "{} has no module doc comment",
            file.display()
        );
    }
}

#[test]
fn files_import_each_other_without_cycles() {
    let (_, edges) = graph();
    assert!(
        edges.values().map(BTreeSet::len).sum::<usize>() > 30,
        "the reader finds the imports ({edges:?})"
    );
    if let Some(cycle) = find_cycle(&edges) {
        panic!("import cycle between files: {cycle:?}");
    }
}

#[test]
fn top_level_modules_import_only_what_lies_below_them() {
    let (_, edges) = graph();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut tops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in &edges {
        let f = top(from);
        if f == "lib" {
            continue;
        }
        let set = tops.entry(f.clone()).or_default();
        for to in tos {
            let t = top(to);
            if t != f {
                set.insert(t);
            }
        }
    }
    for (from, tos) in &tops {
        let ok = allowed
            .get(from.as_str())
            .unwrap_or_else(|| panic!("top-level module {from} is not in ALLOWED"));
        for to in tos {
            assert!(
                ok.contains(&to.as_str()),
                "{from} imports {to}, which is not below it"
            );
        }
    }
    assert!(
        find_cycle(&tops).is_none(),
        "cycle between top-level modules"
    );
    // The reader sees the arrows it should (guards the test against reading nothing).
    assert!(tops["proxy"].contains("store") && tops["store"].contains("precondition"));
}

#[test]
fn the_reader_finds_cycles_it_is_shown() {
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    edges.entry("a").or_default().insert("b");
    edges.entry("b").or_default().insert("c");
    edges.entry("c").or_default().insert("a");
    assert_eq!(find_cycle(&edges).map(|c| c.len()), Some(4));
    edges.get_mut("c").unwrap().clear();
    assert!(find_cycle(&edges).is_none());
    let src = Source {
        module: vec!["proxy".into(), "enforce".into()],
        text: "mod probe;\nuse super::answer::{self, x};\nuse crate::{store::Entry, identity};\nfn f() { probe::go(); crate::config::Route::x(); }".into(),
        is_folder_root: true,
    };
    let refs: BTreeSet<String> = references(&src).iter().map(|p| p.join("::")).collect();
    for want in [
        "proxy::answer::self",
        "proxy::answer::x",
        "store::Entry",
        "identity",
        "proxy::enforce::probe::go",
        "config::Route::x",
    ] {
        assert!(refs.contains(want), "{want} not in {refs:?}");
    }
}
