//! Every repo-relative path the docs and sources cite exists.
//!
//! Scanned: every Markdown file, every `*.rs`, `*.toml`, `*.sql`, `*.sh`, `*.yaml`/`*.yml`, `*.json`
//! (README.md, the Cargo manifests, docs/, infra/template.yaml, the dashboards and monitors with
//! their runbook links, migrations, scripts, sources), outside build output and hidden directories.
//!
//! What counts as a reference:
//! - in Markdown, a path inside a code span or a fenced block (read from the repository root),
//!   and the target of a link (read from the Markdown file's own directory, as GitHub does);
//! - in every other file, a path anywhere (comments cite paths without backticks);
//! - a path is one that starts with a top-level directory of the repository ([`ROOTS`]), at the
//!   start of a word (not inside a URL or a longer path), optionally after `./`.
//!
//! Globs and placeholders (`functions/*`, a path segment like `<env>`) are not paths and are
//! skipped. A `#anchor` on a Markdown target must name one of that file's headings. Cited paths
//! that may legitimately be missing are listed in [`EXCEPTIONS`], each with its reason.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// Top-level directories whose paths are checked.
const ROOTS: &[&str] =
    &["adapters", "cli", "dashboards", "docs", "functions", "infra", "migrations", "scripts", "shared", "tests"];

/// Cited paths allowed not to exist, with the reason. Each must still be cited somewhere.
const EXCEPTIONS: &[(&str, &str)] =
    &[("infra/.aws-sam", "`sam build` output, gitignored: docs/deploy.md says where the build puts its artefacts")];

/// Directories never scanned: build output and anything hidden (.git, .local, .ci).
const SKIP_DIRS: &[&str] = &["target", "target-release", "target-lambda", "node_modules"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Markdown,
    Plain,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    /// 1-based line of the citing file.
    line: usize,
    /// As cited (path and optional `#anchor`).
    cited: String,
    /// Where it points, relative to the repository root (normalised).
    path: PathBuf,
    anchor: Option<String>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the repository root").to_path_buf()
}

fn kind_of(path: &Path) -> Option<Kind> {
    let name = path.file_name()?.to_str()?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "md" => Some(Kind::Markdown),
        "rs" | "toml" | "sql" | "sh" | "yaml" | "yml" | "json" => Some(Kind::Plain),
        _ if name == "Dockerfile" => Some(Kind::Plain),
        _ => None,
    }
}

/// Files to scan, relative to `root`, sorted.
fn sources(root: &Path) -> Vec<(PathBuf, Kind)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Kind)>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                if !name.starts_with('.') && !SKIP_DIRS.contains(&name.as_str()) {
                    walk(root, &path, out);
                }
            } else if ft.is_file() {
                if let (Some(kind), Ok(rel)) = (kind_of(&path), path.strip_prefix(root)) {
                    out.push((rel.to_path_buf(), kind));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `a/b/../c` → `a/c`; `None` if it climbs out of the repository.
fn normalise(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(s) => out.push(s),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')
}

/// A character that, just before a root name, means "inside a longer word, URL or path".
fn joins_previous(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '\\' | ':' | '@' | '~' | '$' | '}' | '%')
}

/// A character that, right after a path, means it is a glob or a placeholder, not a path.
fn is_placeholder(c: char) -> bool {
    matches!(c, '*' | '?' | '<' | '{' | '[' | '$' | '%' | '…')
}

/// Repo-relative paths cited anywhere in `text`: (byte offset, path, anchor).
fn bare_paths(text: &str) -> Vec<(usize, String, Option<String>)> {
    let mut out = Vec::new();
    for (i, _) in text.char_indices() {
        let prev = text[..i].chars().next_back();
        if prev.is_some_and(joins_previous) {
            continue;
        }
        let start = if text[i..].starts_with("./") { i + 2 } else { i };
        let rest = &text[start..];
        if !ROOTS.iter().any(|r| rest.strip_prefix(r).is_some_and(|after| after.starts_with('/'))) {
            continue;
        }
        let len = rest.find(|c: char| !is_path_char(c)).unwrap_or(rest.len());
        let after = rest[len..].chars().next();
        let path = rest[..len].trim_end_matches('.');
        if after.is_some_and(is_placeholder) || path.contains("..") {
            continue;
        }
        let anchor = (len == path.len() && after == Some('#'))
            .then(|| {
                let a = &rest[len + 1..];
                let n = a.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')).unwrap_or(a.len());
                a[..n].to_string()
            })
            .filter(|a| !a.is_empty());
        out.push((i, path.to_string(), anchor));
    }
    out
}

/// Contents of the inline code spans of one line.
fn code_spans(line: &str) -> Vec<&str> {
    let b = line.as_bytes();
    let run_at = |mut j: usize| {
        let s = j;
        while j < b.len() && b[j] == b'`' {
            j += 1;
        }
        j - s
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'`' {
            i += 1;
            continue;
        }
        let run = run_at(i);
        let start = i + run;
        let mut j = start;
        let mut close = None;
        while j < b.len() {
            if b[j] == b'`' {
                let r = run_at(j);
                if r == run {
                    close = Some(j);
                    break;
                }
                j += r;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) => {
                out.push(&line[start..j]);
                i = j + run;
            }
            None => i = start,
        }
    }
    out
}

/// Link targets of one Markdown line: inline `[text](target)` and definitions `[id]: target`.
fn link_targets(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(p) = rest.find("](") {
        let after = &rest[p + 2..];
        let Some(end) = after.find(')') else { break };
        out.push(after[..end].trim());
        rest = &after[end..];
    }
    let t = line.trim_start();
    if t.starts_with('[') {
        if let Some(p) = t.find("]: ") {
            out.push(t[p + 3..].trim());
        }
    }
    out.into_iter()
        .map(|t| t.trim_start_matches('<').split(['>', ' ']).next().unwrap_or(""))
        .filter(|t| !t.is_empty() && !t.contains("://") && !t.starts_with("mailto:"))
        .collect()
}

/// Every reference in one file's text. `file` is the file's repo-relative path.
fn references(file: &Path, kind: Kind, text: &str) -> Vec<Reference> {
    let from_root = |line: usize, path: String, anchor: Option<String>| {
        let cited = match &anchor {
            Some(a) => format!("{path}#{a}"),
            None => path.clone(),
        };
        Reference { line, cited, path: PathBuf::from(path), anchor }
    };
    let mut out = Vec::new();
    match kind {
        Kind::Plain => {
            let starts: Vec<usize> = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
            for (offset, path, anchor) in bare_paths(text) {
                let line = starts.partition_point(|&s| s <= offset);
                out.push(from_root(line, path, anchor));
            }
        }
        Kind::Markdown => {
            let dir = file.parent().unwrap_or(Path::new(""));
            let mut fence: Option<&str> = None;
            for (n, line) in text.lines().enumerate() {
                let trimmed = line.trim_start();
                let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
                match (fence, marker) {
                    (None, Some(m)) => {
                        fence = Some(m);
                        continue;
                    }
                    (Some(f), Some(m)) if f == m => {
                        fence = None;
                        continue;
                    }
                    _ => {}
                }
                let code: Vec<&str> = if fence.is_some() { vec![line] } else { code_spans(line) };
                for span in code {
                    for (_, path, anchor) in bare_paths(span) {
                        out.push(from_root(n + 1, path, anchor));
                    }
                }
                if fence.is_some() {
                    continue;
                }
                for target in link_targets(line) {
                    let (path, anchor) = match target.split_once('#') {
                        Some((p, a)) => (p, Some(a.to_string())),
                        None => (target, None),
                    };
                    let resolved = if path.is_empty() { file.to_path_buf() } else { dir.join(path) };
                    out.push(Reference {
                        line: n + 1,
                        cited: target.to_string(),
                        path: normalise(&resolved).unwrap_or_else(|| PathBuf::from(target)),
                        anchor: anchor.filter(|a| !a.is_empty()),
                    });
                }
            }
        }
    }
    out
}

/// GitHub's anchors for a Markdown file's headings.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let mut out = BTreeSet::new();
    let mut in_fence = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        let Some(title) = (!in_fence).then(|| line.strip_prefix('#')).flatten() else { continue };
        let title = title.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 { slug.clone() } else { format!("{slug}-{n}") });
        *n += 1;
    }
    out
}

/// Problems with `r`, cited from `file`: a missing path or an unknown anchor.
fn check(root: &Path, file: &Path, r: &Reference) -> Option<String> {
    let target = root.join(&r.path);
    if !target.exists() {
        return Some(format!("{}:{}: `{}` does not exist", file.display(), r.line, r.cited));
    }
    let anchor = r.anchor.as_ref()?;
    if target.extension().and_then(|e| e.to_str()) != Some("md") {
        return None;
    }
    let text = std::fs::read_to_string(&target).ok()?;
    (!anchors(&text).contains(anchor))
        .then(|| format!("{}:{}: `{}`: {} has no heading #{anchor}", file.display(), r.line, r.cited, r.path.display()))
}

#[test]
fn every_cited_repo_path_exists() {
    let root = repo_root();
    let files = sources(&root);
    assert!(files.iter().any(|(f, _)| f == Path::new("README.md")), "the scan must see README.md");
    assert!(files.iter().any(|(f, _)| f.starts_with("docs")), "the scan must see docs/");
    let mut problems = Vec::new();
    let mut cited_exceptions = BTreeSet::new();
    let mut checked = 0usize;
    for (file, kind) in &files {
        let Ok(text) = std::fs::read_to_string(root.join(file)) else { continue };
        for r in references(file, *kind, &text) {
            let excepted = EXCEPTIONS.iter().find(|(p, _)| r.path.starts_with(p));
            if let Some((p, _)) = excepted {
                cited_exceptions.insert(*p);
                continue;
            }
            checked += 1;
            problems.extend(check(&root, file, &r));
        }
    }
    assert!(checked > 50, "only {checked} references found: is the scanner broken?");
    for (p, reason) in EXCEPTIONS {
        assert!(cited_exceptions.contains(p), "exception `{p}` ({reason}) is no longer cited: remove it");
    }
    assert!(problems.is_empty(), "{} broken reference(s):\n{}", problems.len(), problems.join("\n"));
}

// The scanner itself. Paths are assembled at run time so that this file cites none of them.

fn p(parts: &[&str]) -> String {
    parts.join("/")
}

#[test]
fn a_missing_path_is_reported() {
    let root = repo_root();
    let md = PathBuf::from(p(&["docs", "x.md"]));
    let bogus = p(&["docs", "decisions", "9999-no-such-decision.md"]);
    let text = format!("# T\n\nSee `{bogus}` and [the ADR]({}).\n", p(&["decisions", "9999-nope.md"]));
    let refs = references(&md, Kind::Markdown, &text);
    let cited: Vec<&str> = refs.iter().map(|r| r.cited.as_str()).collect();
    assert_eq!(cited, vec![bogus.as_str(), "decisions/9999-nope.md"]);
    assert_eq!(refs[1].path, PathBuf::from(p(&["docs", "decisions", "9999-nope.md"])), "links are file-relative");
    let problems: Vec<String> = refs.iter().filter_map(|r| check(&root, &md, r)).collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with(&format!("{}:3: ", md.display())), "{problems:?}");

    let rust = format!("fn f() {{}}\n// see {} for why\n", p(&["migrations", "V9__nope.sql"]));
    let refs = references(Path::new("x.rs"), Kind::Plain, &rust);
    assert_eq!((refs.len(), refs[0].line), (1, 2), "{refs:?}");
    assert!(check(&root, Path::new("x.rs"), &refs[0]).is_some());
}

#[test]
fn a_broken_runbook_anchor_in_an_alarm_or_monitor_is_reported() {
    let root = repo_root();
    let runbook = p(&["docs", "runbooks", "email.md"]);
    let monitor = format!("{{\"message\": \"DLQ not empty.\\n\\nRunbook: {runbook}#dlq-is-full\\n@oncall\"}}");
    let refs = references(Path::new("monitors.json"), Kind::Plain, &monitor);
    assert_eq!(refs.len(), 1, "{refs:?}");
    assert!(check(&root, Path::new("monitors.json"), &refs[0]).is_some(), "a missing heading must be reported");
    let alarm =
        format!("      AlarmDescription: >-\n        Oldest message too old. Runbook: {runbook}#dlq-not-empty\n");
    let refs = references(Path::new("template.yaml"), Kind::Plain, &alarm);
    assert_eq!(refs.len(), 1, "{refs:?}");
    assert_eq!(check(&root, Path::new("template.yaml"), &refs[0]), None);
}

#[test]
fn existing_paths_and_anchors_pass() {
    let root = repo_root();
    let md = PathBuf::from(p(&["docs", "runbooks", "x.md"]));
    let text = format!(
        "`{}` and `./{}` and [h](holds.md) and [d](../{}) and [r](../../README.md#architecture)\n",
        p(&["docs", "runbooks"]),
        p(&["scripts", "dev.sh"]),
        p(&["deploy.md"]),
    );
    let refs = references(&md, Kind::Markdown, &text);
    assert_eq!(refs.len(), 5, "{refs:?}");
    for r in &refs {
        assert_eq!(check(&root, &md, r), None, "{r:?}");
    }
    let missing_anchor = Reference {
        line: 1,
        cited: "README.md#no-such-heading".into(),
        path: PathBuf::from("README.md"),
        anchor: Some("no-such-heading".into()),
    };
    assert!(check(&root, Path::new("x.md"), &missing_anchor).is_some());
}

#[test]
fn urls_globs_placeholders_and_foreign_paths_are_not_references() {
    let text = [
        format!("https://github.com/org/repo/blob/main/{}", p(&["docs", "x.md"])),
        format!("{}/*", "functions"),
        format!("{}/<name>/src", "functions"),
        format!("{}/{{a,b}}", "dashboards"),
        format!("../{}", p(&["shared", "BRIEF.md"])),
        format!("target/{}", p(&["cli", "x"])),
        format!("my_{}", p(&["docs", "x"])),
        format!("${{ROOT}}/{}", p(&["scripts", "x.sh"])),
    ]
    .join("\n");
    assert_eq!(references(Path::new("x.rs"), Kind::Plain, &text), vec![]);
    // Prose outside code spans is not a reference in Markdown.
    let prose = format!("{} as JSON, {} in prose\n", p(&["dashboards", "monitors"]), p(&["docs", "nope"]));
    assert_eq!(references(Path::new("README.md"), Kind::Markdown, &prose), vec![]);
}

#[test]
fn anchors_follow_github_slugs() {
    let a =
        anchors("# Holds runbook\n## Kill switch (no deploy)\n```\n# not a heading\n```\n## Kill switch (no deploy)\n");
    let want: BTreeSet<String> =
        ["holds-runbook", "kill-switch-no-deploy", "kill-switch-no-deploy-1"].into_iter().map(String::from).collect();
    assert_eq!(a, want);
}
