//! The `holdfast …` commands the runbooks, the deploy guide and the README quote, found the way
//! a reader finds them: inline code spans and lines of fenced code blocks. A test parses each
//! one against this CLI's real argument parser (subcommands and flags), so a renamed command or
//! flag fails CI instead of an on-call engineer at 3 a.m. Fenced blocks marked `sh read-only`
//! hold commands that change nothing; `cli/tests/runbook_read_only.rs` runs them.

/// The documents whose commands must exist (repo-relative).
pub const DOCUMENTS: &[&str] = &[
    "docs/runbooks/holds.md",
    "docs/runbooks/email.md",
    "docs/runbooks/metrics.md",
    "docs/runbooks/feature-flags.md",
    "docs/deploy.md",
    "README.md",
];

/// The info string of a fenced block whose commands are safe to run against a live stack.
pub const READ_ONLY_INFO: &str = "sh read-only";

/// A `holdfast` command quoted in a document, as the words after `holdfast`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted {
    pub line: usize,
    pub text: String,
    pub read_only: bool,
}

/// The prefixes a document may put before the CLI's arguments.
const PREFIXES: &[&str] =
    &["cargo run -p holdfast-cli -- ", "./target/debug/holdfast ", "./target/release/holdfast ", "holdfast "];

fn strip_prefix(s: &str) -> Option<&str> {
    let s = s.trim().trim_start_matches("$ ");
    PREFIXES.iter().find_map(|p| s.strip_prefix(p)).map(str::trim)
}

/// Every quoted command in `markdown`: inline code spans outside fences and lines inside
/// fenced blocks (shell continuations joined), each cut at the first shell operator or comment.
pub fn quoted_commands(markdown: &str) -> Vec<Quoted> {
    let mut out = Vec::new();
    let mut fence: Option<String> = None;
    let mut pending = String::new();
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            fence = if fence.is_some() { None } else { Some(info.trim().to_owned()) };
            continue;
        }
        match &fence {
            Some(info) => {
                pending.push_str(line.trim().trim_end_matches('\\'));
                pending.push(' ');
                if line.trim_end().ends_with('\\') {
                    continue;
                }
                if let Some(rest) = strip_prefix(&pending) {
                    out.push(Quoted { line: i + 1, text: cut(rest), read_only: info == READ_ONLY_INFO });
                }
                pending.clear();
            }
            None => {
                // Odd pieces between backticks are code spans.
                for span in line.split('`').skip(1).step_by(2) {
                    if let Some(rest) = strip_prefix(span) {
                        out.push(Quoted { line: i + 1, text: cut(rest), read_only: false });
                    }
                }
            }
        }
    }
    out
}

fn cut(s: &str) -> String {
    let end = [" #", " |", " &&", " ;", " >", " 2>"].iter().filter_map(|op| s.find(op)).min().unwrap_or(s.len());
    s[..end].split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Shell-ish words of a quoted command: optional parts `[--x N]` are kept (their flags must
/// exist too), `a|b` alternatives take the first, quotes are removed. Placeholders
/// (`<name>`, `$VAR`, `…`) are marked so a value error on them is not a finding.
pub fn words(text: &str) -> (Vec<String>, bool) {
    let mut placeholder = false;
    let mut out = Vec::new();
    for w in text.split_whitespace() {
        let w = w.trim_matches(|c| c == '[' || c == ']').trim_matches(|c| c == '"' || c == '\'');
        let w = w.split('|').next().unwrap_or(w);
        if w.is_empty() || w == "…" || w == "..." {
            continue;
        }
        let is_placeholder = w.starts_with('<')
            || w.starts_with('$')
            || w.contains('…')
            || (w.len() <= 8 && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
        placeholder |= is_placeholder;
        out.push(if is_placeholder { "PLACEHOLDER".to_owned() } else { w.to_owned() });
    }
    (out, placeholder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_found_in_spans_and_fenced_blocks() {
        let md = "Run `holdfast flags matrix` or `ls`.\n```sh read-only\nholdfast holds backfill-metadata \\\n  --dry-run  # look first\n```\n```sh\n$ holdfast migrate | tee x\n```\n";
        let found = quoted_commands(md);
        assert_eq!(
            found,
            vec![
                Quoted { line: 1, text: "flags matrix".into(), read_only: false },
                Quoted { line: 4, text: "holds backfill-metadata --dry-run".into(), read_only: true },
                Quoted { line: 7, text: "migrate".into(), read_only: false },
            ]
        );
    }
}
