//! The source tree's folders are its layers, and this test keeps them so: a module may use the
//! layers below its own and the modules of its own folder, never a layer above, and no two files
//! use each other. It reads the `use` declarations and `crate::`/`super::` paths of every file
//! under `src/`, so a change that crosses a layer fails here with the two files named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A folder may use the folders of lower layers only; folders on one
/// layer do not use each other.
const LAYERS: &[&[&str]] = &[
    &["error", "redact"],
    &["model"],
    &["remote"],
    &["source", "store"],
    &["format"],
    &["ops"],
    &["cli"],
];

type Module = Vec<String>;

fn layer_of(module: &[String]) -> Option<usize> {
    let top = module.first()?;
    LAYERS
        .iter()
        .position(|layer| layer.contains(&top.as_str()))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut module: Module = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        module.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        module.pop();
    }
    module
}

/// The text without comments, so a doc comment naming a module is not a use of it.
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a `use` tree names: `a::{b, c::{d, e}}` is `a::b`, `a::c::d` and `a::c::e`.
fn expand(tree: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut depth = 0;
    let mut start = 0;
    let mut items = Vec::new();
    for (i, c) in tree.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&tree[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&tree[start..]);
    for item in items {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let mut path = prefix.to_vec();
        if let Some(open) = item.find('{') {
            path.extend(segments(&item[..open]));
            expand(&item[open + 1..item.len() - 1], &path, out);
        } else {
            let item = item.split(" as ").next().unwrap();
            path.extend(segments(item));
            out.push(path);
        }
    }
}

fn segments(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// Every path `text` names through `crate`, `super` or `self`, resolved against `module`.
fn named_paths(text: &str, module: &[String]) -> Vec<Module> {
    let mut raw = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("use ") {
        let boundary = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        let after = &rest[i + 4..];
        let end = after.find(';').unwrap_or(after.len());
        let tree = after[..end].trim();
        if boundary
            && ["crate::", "super::", "self::"]
                .iter()
                .any(|p| tree.starts_with(p))
        {
            expand(tree, &[], &mut raw);
        }
        rest = &after[end.min(after.len())..];
    }
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(start) {
            let at = from + i;
            let boundary = at == 0 || {
                let b = text.as_bytes()[at - 1];
                !(b.is_ascii_alphanumeric() || b == b'_')
            };
            let path: String = text[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            if boundary {
                raw.push(segments(&path).collect());
            }
            from = at + start.len();
        }
    }
    raw.into_iter()
        .filter_map(|path| {
            let mut base = module.to_vec();
            let mut path = path.as_slice();
            match path.first().map(String::as_str) {
                Some("crate") => {
                    base.clear();
                    path = &path[1..];
                }
                Some("super" | "self") => {}
                _ => return None,
            }
            while let Some(first) = path.first() {
                match first.as_str() {
                    "super" => {
                        base.pop()?;
                    }
                    "self" => {}
                    _ => break,
                }
                path = &path[1..];
            }
            base.extend(path.iter().cloned());
            (!base.is_empty()).then_some(base)
        })
        .collect()
}

/// Each module of `src/` and the modules it uses (longest prefix of each path that is a file).
fn uses(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<Module, PathBuf> = files
        .iter()
        .map(|f| (module_of(src, f), f.clone()))
        .collect();
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let text = code(&std::fs::read_to_string(file).unwrap());
        // A file's inline `mod tests` sees the file as `super`.
        let (body, tests) = match text.find("#[cfg(test)]\nmod tests {") {
            Some(i) => text.split_at(i),
            None => (text.as_str(), ""),
        };
        let mut test_module = module.clone();
        test_module.push("tests".into());
        let mut used = BTreeSet::new();
        let paths = named_paths(body, module)
            .into_iter()
            .chain(named_paths(tests, &test_module));
        for mut path in paths {
            while !path.is_empty() && !modules.contains_key(&path) {
                path.pop();
            }
            if !path.is_empty() && &path != module {
                used.insert(path);
            }
        }
        graph.insert(module.clone(), used);
    }
    graph
}

fn name(module: &[String]) -> String {
    module.join("::")
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_module_uses_a_layer_above_or_beside_its_own() {
    let graph = uses(&src());
    let mut crossings = Vec::new();
    for (module, used) in &graph {
        let (Some(mine), Some(my_top)) = (layer_of(module), module.first()) else {
            continue;
        };
        for other in used {
            let Some(theirs) = layer_of(other) else {
                continue;
            };
            if other.first() != Some(my_top) && theirs >= mine {
                crossings.push(format!("{} uses {}", name(module), name(other)));
            }
        }
    }
    assert!(
        crossings.is_empty(),
        "layers crossed:\n{}",
        crossings.join("\n")
    );
}

#[test]
fn no_two_files_use_each_other() {
    let graph = uses(&src());
    let mut pairs = Vec::new();
    for (module, used) in &graph {
        for other in used {
            if module < other && graph.get(other).is_some_and(|u| u.contains(module)) {
                pairs.push(format!("{} <-> {}", name(module), name(other)));
            }
        }
    }
    assert!(
        pairs.is_empty(),
        "files using each other:\n{}",
        pairs.join("\n")
    );
}

#[test]
fn every_folder_of_src_is_a_layer() {
    let mut folders: Vec<String> = std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        // The package's other binaries: crates of their own, which reach the library through
        // its public API only, as `main.rs` does.
        .filter(|f| f != "bin")
        .collect();
    folders.sort();
    let unlayered: Vec<_> = folders
        .iter()
        .filter(|f| layer_of(&[f.to_string()]).is_none())
        .collect();
    assert!(unlayered.is_empty(), "folders in no layer: {unlayered:?}");
}

/// The command line is the edge: clap parses flags into `cli::args`, which hands the layers
/// below plain options, so an operation can be run without a command line.
#[test]
fn clap_is_used_only_by_the_command_line() {
    let src = src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let users: Vec<String> = files
        .iter()
        .filter(|file| {
            let module = module_of(&src, file);
            module.first().map(String::as_str) != Some("cli")
                && code(&std::fs::read_to_string(file).unwrap()).contains("clap")
        })
        .map(|file| file.strip_prefix(&src).unwrap().display().to_string())
        .collect();
    assert!(users.is_empty(), "clap used outside src/cli: {users:?}");
}

/// The checker itself: a use across layers, a `super` path and a `use` tree are all seen.
#[test]
fn the_checker_sees_uses_in_every_spelling() {
    let module: Module = vec!["format".into(), "load".into()];
    let text = code(
        "use crate::{store::Store, model::{Cell, page::Page}};\n\
         use super::manifest::Manifest as M; // crate::cli is only named here\n\
         fn f() { crate::ops::backup::run(); }",
    );
    let found: BTreeSet<String> = named_paths(&text, &module)
        .iter()
        .map(|p| name(p))
        .collect();
    let expected: BTreeSet<String> = [
        "store::Store",
        "model::Cell",
        "model::page::Page",
        "format::manifest::Manifest",
        "ops::backup::run",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(found, expected);
}
