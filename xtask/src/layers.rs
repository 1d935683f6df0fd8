//! `cargo xtask layers`: the top-level modules of threadtrace (a file
//! `src/x.rs` or a directory `src/x/`) import each other without a cycle,
//! and the rules of [`RULES`] hold, so that the crate stays in layers that
//! can be read, tested and changed from the bottom up.
//!
//! A file of module `a` imports module `b` when its code names `crate::b`:
//! in `use crate::b::...`, in a `use crate::{b::{c, d}, e}` group (one
//! level deep: `b` and `e`), in a path in code (`crate::b::f()`), or
//! through `super::` climbing out of `a` to the crate's root. Comments,
//! string and character literals, `#[cfg(test)]` items and modules, files
//! named `tests.rs` and files under a `tests/` directory do not count:
//! tests may reach across the layers.
//!
//! This reads tokens, not Rust's syntax tree: `#[path]` attributes and
//! macros that build paths are not followed.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

use crate::root_dir;

/// The crate checked by default and by `cargo xtask test`, from the
/// workspace's root.
pub const DEFAULT_SRC: &str = "threadtrace/src";

/// What a top-level module may import of the crate's other top-level
/// modules.
enum Imports {
    /// Only these (none: the module is at the bottom).
    Only(&'static [&'static str]),
    /// Any but these.
    Not(&'static [&'static str]),
}

/// The layering rules, each checked when its module exists.
/// They follow docs/architecture.md: foundation, then the model, the
/// words, what fills the model, what reads it, and the commands on top.
const RULES: &[(&str, Imports)] = &[
    // The data model, at the bottom: everything else builds on it.
    ("model", Imports::Only(&[])),
    // Words for people read the model and nothing else.
    ("words", Imports::Only(&["model"])),
    // Foundation: no model, nothing above.
    ("clock", Imports::Only(&[])),
    ("sanitize", Imports::Only(&[])),
    ("bounded", Imports::Only(&[])),
    ("host", Imports::Only(&[])),
    ("own_limits", Imports::Only(&[])),
    ("privileges", Imports::Only(&[])),
    ("proctable", Imports::Only(&["clock"])),
    ("panics", Imports::Only(&["sanitize"])),
    // What fills the model knows nothing of where it goes.
    ("kernel", Imports::Not(READERS_AND_COMMANDS)),
    ("pods", Imports::Not(READERS_AND_COMMANDS)),
    ("attribution", Imports::Not(READERS_AND_COMMANDS)),
    ("enrich", Imports::Not(READERS_AND_COMMANDS)),
    ("diagnosis", Imports::Not(READERS_AND_COMMANDS)),
    // Sinks are leaves: the model and the words, not the collector, the
    // dashboard or what fills the model from the kernel.
    (
        "sink",
        Imports::Not(&[
            "collector",
            "tui",
            "cli",
            "report",
            "export",
            "kernel",
            "enrich",
            "attribution",
        ]),
    ),
    (
        "tui",
        Imports::Not(&[
            "collector",
            "cli",
            "report",
            "export",
            "kernel",
            "enrich",
            "attribution",
        ]),
    ),
    (
        "input",
        Imports::Not(&["collector", "cli", "report", "export", "tui", "sink"]),
    ),
];

/// The layers above the fillers of the model.
const READERS_AND_COMMANDS: &[&str] = &[
    "sink",
    "tui",
    "input",
    "report",
    "export",
    "collector",
    "cli",
    "doctor",
];

impl Imports {
    fn allows(&self, module: &str) -> bool {
        match self {
            Imports::Only(allowed) => allowed.contains(&module),
            Imports::Not(forbidden) => !forbidden.contains(&module),
        }
    }

    fn describe(&self, module: &str) -> String {
        match self {
            Imports::Only([]) => format!("{module} may import no other module of the crate"),
            Imports::Only(allowed) => format!("{module} may import only {}", allowed.join(", ")),
            Imports::Not(forbidden) => format!("{module} may not import {}", forbidden.join(", ")),
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// The crate's source directory, from the workspace's root.
    #[arg(value_name = "DIR", default_value = DEFAULT_SRC)]
    src: PathBuf,
}

pub fn run(args: &Args) -> Result<()> {
    check(&root_dir().join(&args.src))
}

/// Prints one line when the layers hold, else every cycle and broken rule
/// with the files that make each import, and fails.
pub fn check(src: &Path) -> Result<()> {
    let report = report(src, RULES)?;
    print!("{}", report.text);
    if report.cycles + report.broken > 0 {
        bail!(
            "layers: {} import cycle(s), {} broken rule(s) among the modules of {}",
            report.cycles,
            report.broken,
            src.display()
        );
    }
    Ok(())
}

/// What `layers` prints, and how many problems it found.
struct Report {
    text: String,
    cycles: usize,
    broken: usize,
}

fn report(src: &Path, rules: &[(&str, Imports)]) -> Result<Report> {
    let graph = Graph::read(src)?;
    let mut text = String::new();
    let cycles = graph.cycles();
    for cycle in &cycles {
        let mut edges: Vec<_> = graph
            .edges_where(|from, to| cycle.contains(&from) && cycle.contains(&to))
            .collect();
        if edges.len() == cycle.len() {
            // As many edges as modules in a strongly connected component:
            // one loop, shown in its order from its first module.
            let mut path = vec![cycle[0]];
            let mut ordered = Vec::new();
            while let Some(&edge) = edges.iter().find(|e| path.last() == Some(&e.0)) {
                path.push(edge.1);
                ordered.push(edge);
                if edge.1 == cycle[0] {
                    break;
                }
            }
            writeln!(text, "cycle: {}", path.join(" -> "))?;
            edges = ordered;
        } else {
            writeln!(text, "cycle: {} ({} edges)", cycle.join(", "), edges.len())?;
        }
        write_edges(&mut text, &edges)?;
    }
    let mut broken = 0;
    for (module, imports) in rules {
        let edges: Vec<_> = graph
            .edges_where(|from, to| from == *module && !imports.allows(to))
            .collect();
        if !edges.is_empty() {
            broken += 1;
            writeln!(text, "rule: {}", imports.describe(module))?;
            write_edges(&mut text, &edges)?;
        }
    }
    if cycles.is_empty() && broken == 0 {
        writeln!(
            text,
            "layers: {} top-level modules, {} edges, no import cycle",
            graph.modules.len(),
            graph.edges.len()
        )?;
    }
    Ok(Report {
        text,
        cycles: cycles.len(),
        broken,
    })
}

/// `  from -> to: the files`, one line each.
fn write_edges(out: &mut String, edges: &[(&str, &str, &BTreeSet<String>)]) -> Result<()> {
    for (from, to, files) in edges {
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        writeln!(out, "  {from} -> {to}: {}", files.join(", "))?;
    }
    Ok(())
}

/// Which top-level modules import which.
struct Graph {
    modules: BTreeSet<String>,
    /// (importer, imported): the files, from `src`, whose code imports.
    edges: BTreeMap<(String, String), BTreeSet<String>>,
}

impl Graph {
    fn read(src: &Path) -> Result<Graph> {
        let mut files = Vec::new();
        rust_files(src, src, &mut files)?;
        let mut scanned = Vec::new();
        let mut test_modules = Vec::new();
        for (rel, path) in files {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let scan = scan(&rel, &text);
            test_modules.extend(scan.test_modules);
            scanned.push((rel, scan.refs));
        }
        // A file of a `#[cfg(test)] mod x;` is a test, and so is all
        // under it.
        scanned.retain(|(rel, _)| {
            !test_modules
                .iter()
                .any(|m| *rel == format!("{m}.rs") || rel.starts_with(&format!("{m}/")))
        });
        let modules: BTreeSet<String> = scanned
            .iter()
            .filter_map(|(rel, _)| top_level(rel))
            .map(str::to_owned)
            .collect();
        let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for (rel, refs) in &scanned {
            let Some(from) = top_level(rel) else { continue };
            for to in refs {
                if to != from && modules.contains(to) {
                    edges
                        .entry((from.to_owned(), to.clone()))
                        .or_default()
                        .insert(rel.clone());
                }
            }
        }
        Ok(Graph { modules, edges })
    }

    fn edges_where<'a>(
        &'a self,
        keep: impl Fn(&str, &str) -> bool + 'a,
    ) -> impl Iterator<Item = (&'a str, &'a str, &'a BTreeSet<String>)> + 'a {
        self.edges
            .iter()
            .map(|((from, to), files)| (from.as_str(), to.as_str(), files))
            .filter(move |(from, to, _)| keep(from, to))
    }

    /// The strongly connected components of two modules or more (Tarjan),
    /// each sorted, in the order of their first module.
    fn cycles(&self) -> Vec<Vec<&str>> {
        let names: Vec<&str> = self.modules.iter().map(String::as_str).collect();
        let index = |m: &str| names.binary_search(&m).expect("edges join modules");
        let mut adjacent = vec![Vec::new(); names.len()];
        for (from, to) in self.edges.keys() {
            adjacent[index(from)].push(index(to));
        }
        let mut tarjan = Tarjan {
            adjacent: &adjacent,
            order: vec![None; names.len()],
            low: vec![0; names.len()],
            on_stack: vec![false; names.len()],
            stack: Vec::new(),
            next: 0,
            components: Vec::new(),
        };
        for v in 0..names.len() {
            if tarjan.order[v].is_none() {
                tarjan.visit(v);
            }
        }
        let mut cycles: Vec<Vec<&str>> = tarjan
            .components
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|mut c| {
                c.sort_unstable();
                c.into_iter().map(|v| names[v]).collect()
            })
            .collect();
        cycles.sort();
        cycles
    }
}

struct Tarjan<'a> {
    adjacent: &'a [Vec<usize>],
    /// When each module was first visited.
    order: Vec<Option<usize>>,
    /// The earliest visited module reachable from each, on the stack.
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    next: usize,
    components: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn visit(&mut self, v: usize) {
        self.order[v] = Some(self.next);
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        let adjacent = self.adjacent;
        for &w in &adjacent[v] {
            match self.order[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(order) if self.on_stack[w] => self.low[v] = self.low[v].min(order),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.order[v] {
            let mut component = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}

/// Every `.rs` file under `dir`, as (path from `src` with `/`, path), in
/// order, but for tests: `tests.rs` files and `tests/` directories.
fn rust_files(src: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        if entry.file_type()?.is_dir() {
            if name != "tests" {
                rust_files(src, &path, out)?;
            }
        } else if path.extension().is_some_and(|e| e == "rs") && name != "tests.rs" {
            let rel = path.strip_prefix(src).expect("under src");
            out.push((rel.to_string_lossy().replace('\\', "/"), path));
        }
    }
    Ok(())
}

/// The top-level module a file belongs to: `x` for `x.rs` and `x/...`;
/// none for the crate's root files and its binaries.
fn top_level(rel: &str) -> Option<&str> {
    match rel.split_once('/') {
        Some(("bin", _)) => None,
        Some((dir, _)) => Some(dir),
        None if rel == "lib.rs" || rel == "main.rs" => None,
        None => rel.strip_suffix(".rs"),
    }
}

/// What one file's code names.
#[derive(Default)]
struct Scan {
    /// The first name after each `crate::` (and each name of a
    /// `crate::{...}` group), and after `super::`s that reach the root.
    refs: BTreeSet<String>,
    /// The modules of `#[cfg(test)] mod x;` declarations, as paths from
    /// `src` without `.rs`: `tui/golden` for tui/golden.rs and tui/golden/.
    test_modules: Vec<String>,
}

/// Tokens that start an item (after its visibility) or a `let`: it ends at
/// its `;` or its closing brace, never at a comma (of its generics).
const ITEM_KEYWORDS: &[&str] = &[
    "async",
    "const",
    "enum",
    "extern",
    "fn",
    "impl",
    "let",
    "macro_rules",
    "mod",
    "static",
    "struct",
    "trait",
    "type",
    "union",
    "unsafe",
    "use",
];

fn scan(rel: &str, text: &str) -> Scan {
    let toks = tokens(text);
    let t = |k: usize| toks.get(k).map(String::as_str).unwrap_or("");
    // The module the code is in: the file's (a/b.rs and a/b/mod.rs are
    // a::b, lib.rs and main.rs the crate), then inline `mod x { ... }`s.
    let mut path: Vec<&str> = rel.trim_end_matches(".rs").split('/').collect();
    if path.last() == Some(&"mod") || (top_level(rel).is_none() && path.len() == 1) {
        path.pop();
    }
    // Whether each `{` still open opened an inline module.
    let mut braces = Vec::new();
    let mut out = Scan::default();
    let mut i = 0;
    while i < toks.len() {
        match t(i) {
            "#" if (i + 1..i + 7)
                .map(t)
                .eq(["[", "cfg", "(", "test", ")", "]"]) =>
            {
                let start = i + 7;
                let end = item_end(&toks, start);
                let decl = after_attributes(&toks, start);
                if t(decl) == "mod" && is_ident(t(decl + 1)) && t(decl + 2) == ";" {
                    let mut module = path.clone();
                    module.push(t(decl + 1));
                    out.test_modules.push(module.join("/"));
                }
                i = end;
                continue;
            }
            "mod" if is_ident(t(i + 1)) && t(i + 2) == "{" => {
                path.push(t(i + 1));
                braces.push(true);
                i += 3;
                continue;
            }
            "{" => braces.push(false),
            "}" => {
                let closes_module = braces.pop() == Some(true);
                if closes_module {
                    path.pop();
                }
            }
            "crate" if t(i + 1) == "::" => {
                i = names(&toks, i + 2, &mut out.refs);
                continue;
            }
            "super" if t(i + 1) == "::" => {
                let mut j = i;
                while t(j) == "super" && t(j + 1) == "::" {
                    j += 2;
                }
                if (j - i) / 2 == path.len() {
                    j = names(&toks, j, &mut out.refs);
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Adds the name a path starts with at `k`, or each of a `{...}` group's
/// elements (`{b::{c, d}, e}`: b and e); returns where the path goes on.
fn names(toks: &[String], k: usize, refs: &mut BTreeSet<String>) -> usize {
    let Some(first) = toks.get(k) else { return k };
    if first != "{" {
        if is_ident(first) {
            refs.insert(first.clone());
            return k + 1;
        }
        return k;
    }
    let mut depth = 0;
    let mut element_starts = true;
    for (j, tok) in toks.iter().enumerate().skip(k) {
        match tok.as_str() {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            "," if depth == 1 => {
                element_starts = true;
                continue;
            }
            name if element_starts && is_ident(name) => {
                refs.insert(name.to_owned());
            }
            _ => {}
        }
        element_starts = tok == "{" && depth == 1;
    }
    toks.len()
}

/// Past the attributes and the visibility at `k`.
fn after_attributes(toks: &[String], mut k: usize) -> usize {
    let t = |k: usize| toks.get(k).map(String::as_str).unwrap_or("");
    loop {
        if t(k) == "#" && t(k + 1) == "[" {
            k = closing(toks, k + 1) + 1;
        } else if t(k) == "pub" {
            k += 1;
            if t(k) == "(" {
                k = closing(toks, k) + 1;
            }
        } else {
            return k;
        }
    }
}

/// The bracket that closes the one at `k`.
fn closing(toks: &[String], k: usize) -> usize {
    let mut depth = 0usize;
    for (j, tok) in toks.iter().enumerate().skip(k) {
        match tok.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// Where the item, statement, field, variant or match arm at `k` ends:
/// after its `;` or its closing brace, after its comma when it is no
/// item, before the bracket that closes what holds it.
fn item_end(toks: &[String], k: usize) -> usize {
    let first = after_attributes(toks, k);
    let item = toks
        .get(first)
        .is_some_and(|t| ITEM_KEYWORDS.contains(&t.as_str()));
    let mut depth = 0usize;
    for (j, tok) in toks.iter().enumerate().skip(first) {
        match tok.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" if depth == 0 => return j,
            "}" if depth == 1 => return j + 1,
            ")" | "]" | "}" => depth -= 1,
            ";" if depth == 0 => return j + 1,
            "," if depth == 0 && !item => return j + 1,
            _ => {}
        }
    }
    toks.len()
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_ident(tok: &str) -> bool {
    tok.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Rust source as tokens that can make a path: identifiers (raw ones
/// without their `r#`), `::` and single punctuation characters. Comments,
/// string and character literals and lifetimes' quotes are left out.
fn tokens(text: &str) -> Vec<String> {
    let cs: Vec<char> = text.chars().collect();
    let at = |k: usize| cs.get(k).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < cs.len() && cs[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            // Block comments nest.
            let mut depth = 0;
            while i < cs.len() {
                if at(i) == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if at(i) == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i = string_end(&cs, i + 1, None);
        } else if c == '\'' {
            i = if at(i + 1) == '\\' {
                // '\n', '\'', '\u{1F600}': past the escaped character,
                // then to the closing quote.
                let mut j = i + 3;
                while j < cs.len() && cs[j] != '\'' {
                    j += 1;
                }
                j + 1
            } else if at(i + 2) == '\'' {
                i + 3
            } else {
                // A lifetime or a label: its name follows.
                i + 1
            };
        } else if is_ident_char(c) {
            let start = i;
            while i < cs.len() && is_ident_char(cs[i]) {
                i += 1;
            }
            let word: String = cs[start..i].iter().collect();
            let raw_string = matches!(word.as_str(), "r" | "br" | "cr")
                && (at(i) == '"' || (at(i) == '#' && matches!(at(i + 1), '"' | '#')));
            if raw_string {
                let hashes = cs[i..].iter().take_while(|&&c| c == '#').count();
                i = string_end(&cs, i + hashes + 1, Some(hashes));
            } else if word == "r" && at(i) == '#' && is_ident_char(at(i + 1)) {
                // r#type: the identifier comes next.
                i += 1;
            } else {
                out.push(word);
            }
        } else if c == ':' && at(i + 1) == ':' {
            out.push("::".to_owned());
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// Past the closing quote of a string whose contents start at `i`: a raw
/// string's (`Some(hashes)`) is `"` and as many `#`, without escapes.
fn string_end(cs: &[char], mut i: usize, raw: Option<usize>) -> usize {
    while i < cs.len() {
        match (cs[i], raw) {
            ('\\', None) => i += 2,
            ('"', None) => return i + 1,
            ('"', Some(hashes))
                if cs[i + 1..]
                    .iter()
                    .take(hashes)
                    .filter(|&&c| c == '#')
                    .count()
                    == hashes =>
            {
                return i + 1 + hashes
            }
            _ => i += 1,
        }
    }
    cs.len()
}

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use super::{report, Graph, Imports, Report, RULES};

    /// A crate's src/ with these files.
    fn tree(files: &[(&str, &str)]) -> TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    /// What `layers` says of such a crate.
    fn layers(files: &[(&str, &str)], rules: &[(&str, Imports)]) -> Report {
        report(tree(files).path(), rules).unwrap()
    }

    /// Its imports between top-level modules.
    fn edges(files: &[(&str, &str)]) -> Vec<(String, String)> {
        let graph = Graph::read(tree(files).path()).unwrap();
        graph.edges.into_keys().collect()
    }

    fn edge(from: &str, to: &str) -> (String, String) {
        (from.to_owned(), to.to_owned())
    }

    #[test]
    fn a_cycle_between_two_modules_fails_with_its_files() {
        let r = layers(
            &[
                ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
                ("a.rs", "use crate::b::B;\n"),
                ("b/mod.rs", "mod x;\n"),
                ("b/x.rs", "pub fn f() { crate::a::g() }\n"),
                ("c.rs", "use crate::a;\n"),
            ],
            RULES,
        );
        assert_eq!((r.cycles, r.broken), (1, 0));
        assert_eq!(
            r.text,
            "cycle: a -> b -> a\n  a -> b: a.rs\n  b -> a: b/x.rs\n"
        );
    }

    #[test]
    fn a_cycle_through_three_modules() {
        let r = layers(
            &[
                ("a.rs", "use crate::{b::{self, B}, d};\n"),
                ("b.rs", "pub fn f() -> crate::c::C { todo!() }\n"),
                ("c.rs", "use crate::a::A;\n"),
                ("d.rs", ""),
            ],
            RULES,
        );
        assert_eq!((r.cycles, r.broken), (1, 0));
        assert_eq!(
            r.text,
            "cycle: a -> b -> c -> a\n  a -> b: a.rs\n  b -> c: b.rs\n  c -> a: c.rs\n"
        );
    }

    #[test]
    fn a_larger_component_lists_every_edge_inside() {
        let r = layers(
            &[
                ("a.rs", "use crate::{b, c};\n"),
                ("b.rs", "use crate::a;\n"),
                ("c.rs", "use crate::a;\n"),
            ],
            RULES,
        );
        assert_eq!(
            r.text,
            "cycle: a, b, c (4 edges)\n  a -> b: a.rs\n  a -> c: a.rs\n  b -> a: b.rs\n  c -> a: c.rs\n"
        );
    }

    #[test]
    fn a_tree_in_layers_passes_with_one_line() {
        let r = layers(
            &[
                ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
                (
                    "main.rs",
                    "use threadtrace::a;\nfn main() { crate::x(); }\n",
                ),
                ("a.rs", "use crate::b::B;\nuse crate::c;\n"),
                ("b/mod.rs", "pub mod inner;\nuse crate::c::C;\n"),
                ("b/inner.rs", "use super::B;\nuse crate::b::B as _;\n"),
                ("c.rs", ""),
            ],
            RULES,
        );
        assert_eq!((r.cycles, r.broken), (0, 0));
        assert_eq!(
            r.text,
            "layers: 3 top-level modules, 3 edges, no import cycle\n"
        );
    }

    #[test]
    fn a_cfg_test_module_does_not_count() {
        assert_eq!(
            edges(&[
                ("a.rs", "#[cfg(test)]\nmod tests {\n    use crate::b;\n}\n"),
                ("b.rs", ""),
            ]),
            []
        );
        // Nor its file, nor a test item of another kind; code after them does.
        assert_eq!(
            edges(&[
                (
                    "a/mod.rs",
                    "#[cfg(test)]\nmod golden;\n\
                     #[cfg(test)]\n#[allow(unused)]\npub(crate) fn t() -> [u8; 2] { crate::b::x() }\n\
                     #[cfg(test)]\nuse crate::b::B;\n\
                     pub struct S {\n    #[cfg(test)]\n    b: crate::b::B,\n    c: crate::c::C,\n}\n\
                     #[cfg(test)]\nimpl<X, Y> crate::b::T for S {}\n\
                     fn f() { crate::d::g() }\n",
                ),
                ("a/golden.rs", "use crate::b;\n"),
                ("b.rs", ""),
                ("c.rs", ""),
                ("d.rs", ""),
            ]),
            [edge("a", "c"), edge("a", "d")]
        );
    }

    #[test]
    fn tests_files_and_directories_do_not_count() {
        assert_eq!(
            edges(&[
                // By their names alone, whether a #[cfg(test)] declares
                // them or not.
                ("a/mod.rs", "mod tests;\n"),
                ("a/tests.rs", "use crate::b;\n"),
                ("a/tests/x.rs", "use crate::b;\n"),
                ("b.rs", ""),
                ("c/tests.rs", "use crate::b;\n"),
            ]),
            []
        );
    }

    #[test]
    fn grouped_and_nested_uses_count_each_first_name() {
        assert_eq!(
            edges(&[
                ("a.rs", "use crate::{\n    b::{c, d},\n    e,\n};\n"),
                ("b.rs", ""),
                ("c.rs", ""),
                ("d.rs", ""),
                ("e.rs", ""),
            ]),
            [edge("a", "b"), edge("a", "e")]
        );
    }

    #[test]
    fn comments_and_strings_do_not_count() {
        assert_eq!(
            edges(&[
                (
                    "a.rs",
                    "// use crate::b;\n/// crate::b::f()\n//! crate::b\n\
                     /* crate::b /* nested */ crate::b */\n\
                     const S: &str = \"crate::b\";\nconst E: &str = \"\\\" crate::b\";\n\
                     const R: &str = r#\"\" crate::b\"#;\nconst B: &[u8] = b\"crate::b\";\n\
                     const Q: char = '\"'; const P: char = '\\''; fn f<'a>(x: &'a str) {}\n\
                     fn g() { crate::c::h() }\n",
                ),
                ("b.rs", ""),
                ("c.rs", ""),
            ]),
            [edge("a", "c")]
        );
    }

    #[test]
    fn super_paths_out_of_a_top_level_module_count() {
        let from_y = |code| {
            edges(&[
                ("a/mod.rs", "mod x;\n"),
                ("a/x/mod.rs", "mod y;\n"),
                ("a/x/y.rs", code),
                ("b.rs", ""),
            ])
        };
        // In a::x::y, super::super is a; one more super is the crate.
        assert_eq!(from_y("use super::super::b;\n"), []);
        assert_eq!(from_y("use super::super::super::b::B;\n"), [edge("a", "b")]);
        assert_eq!(
            from_y("mod inner { fn f() { super::super::super::super::b::f() } }\n"),
            [edge("a", "b")]
        );
        assert_eq!(
            from_y("use super::super::super::{b, c};\n"),
            [edge("a", "b")]
        );
    }

    #[test]
    fn the_model_imports_nothing_of_the_crate() {
        let r = layers(
            &[
                ("lib.rs", "pub mod model;\npub mod sink;\n"),
                ("model/mod.rs", "pub mod x;\n"),
                ("model/x.rs", "use crate::sink::Sink;\n"),
                ("sink.rs", ""),
            ],
            RULES,
        );
        assert_eq!((r.cycles, r.broken), (0, 1));
        assert_eq!(
            r.text,
            "rule: model may import no other module of the crate\n  model -> sink: model/x.rs\n"
        );
        let r = layers(
            &[("model.rs", ""), ("sink.rs", "use crate::model::Event;\n")],
            RULES,
        );
        assert_eq!((r.cycles, r.broken), (0, 0));
    }

    #[test]
    fn a_rule_can_forbid_some_modules() {
        let rules = [("sink", Imports::Not(&["collector", "tui"]))];
        let r = layers(
            &[
                ("sink.rs", "use crate::{model, tui};\n"),
                ("model.rs", ""),
                ("tui.rs", ""),
            ],
            &rules,
        );
        assert_eq!((r.cycles, r.broken), (0, 1));
        assert_eq!(
            r.text,
            "rule: sink may not import collector, tui\n  sink -> tui: sink.rs\n"
        );
    }

    #[test]
    fn the_default_source_is_threadtraces() {
        let lib = crate::root_dir().join(super::DEFAULT_SRC).join("lib.rs");
        assert!(lib.is_file(), "{}", lib.display());
    }
}
