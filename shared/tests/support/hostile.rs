//! Shared by the stable-Rust fuzz targets (`shared/tests/fuzz_*.rs`, `functions/*/tests/fuzz_*.rs`
//! and the `#[cfg(test)] mod fuzz` of the crates whose parsers are private), included by path so
//! no crate has to export test helpers. See docs/testing.md, "Fuzzing".
//!
//! - [`run`]: a bounded proptest run (`PROPTEST_CASES`, else the target's default) that counts
//!   its executions and never writes persistence files (each crash becomes a named `#[test]`).
//! - [`hostile_string`], [`hostile_value`]: what a careless or malicious client sends.
//! - [`mutated`]: a valid document with one hostile edit, as JSON text or raw bytes (duplicate
//!   keys, deep nesting, out-of-range numbers and broken UTF-8 only exist as text).
#![allow(dead_code)] // each including target uses a different part

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value};
use std::cell::Cell;

/// Cases per target: `PROPTEST_CASES` when set (the long runs), else the target's default,
/// chosen to keep the target within a few seconds of a debug `cargo test`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.trim().parse().ok()).filter(|n| *n > 0).unwrap_or(default)
}

/// Runs `test` on `cases(default_cases)` generated values and returns the number of executions
/// (cases plus shrinking steps). A panic inside `test` is a failure like a returned error: the
/// runner catches it, shrinks the input and this panics with the minimal one.
pub fn run<S>(name: &str, default_cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) -> u64
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let cases = cases(default_cases);
    // No failure persistence: a found input is turned into a plain regression #[test] by hand,
    // readable in review, instead of an opaque seed file under proptest-regressions/.
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 4096, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let executions = Cell::new(0u64);
    let started = std::time::Instant::now();
    let result = runner.run(&strategy, |v| {
        executions.set(executions.get() + 1);
        test(v)
    });
    eprintln!(
        "fuzz target {name}: {} executions ({cases} cases) in {:.1} s",
        executions.get(),
        started.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("fuzz target {name} failed: {e}");
    }
    executions.get()
}

/// Strings that have broken parsers before: control and bidi characters, NaN-ish and
/// number-ish text, JSON and SQL look-alikes, markup, format strings, odd whitespace.
pub const NASTY: &[&str] = &[
    "",
    " ",
    "\t\n\r",
    "\u{0}",
    "Ada\u{0}",
    "\u{7}",
    "\u{1b}[31mred",
    "\u{7f}",
    "\u{85}",
    "\u{202E}evil",
    "\u{2066}x\u{2069}",
    "\u{200E}",
    "\u{61C}",
    "\u{FEFF}bom",
    "\u{200B}",
    "\u{2028}\u{2029}",
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-0",
    "0x10",
    "1_000",
    "+5",
    "  7  ",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "true",
    "null",
    "{\"a\":1}",
    "[1,2,3]",
    "\"quoted\"",
    "\\",
    "\\u0000",
    "'; DROP TABLE bookings; --",
    "<script>alert(1)</script>",
    "http://evil.example/x",
    "javascript:alert(1)",
    "%s%n%x",
    "{}{0}",
    "../../etc/passwd",
    "2030-01-07T19:00:00Z",
    "2030-02-30T19:00:00",
    "+262143-12-31T23:59:59Z",
    "-262144-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999+14:00",
    "0000-01-01T00:00",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "6b0b8a3e-7c43-4a4e-9a39-3e0f9d6f2f10",
    "Europe/London",
    "Etc/GMT+12",
    "dev",
    "prod",
    "ses",
    "😀👨‍👩‍👧‍👦",
    "שלום",
    "李小龍",
    "Zoë O'Brien-Núñez",
    "a@b.c",
    "\"ada\"@example.com",
    "ada,bob@example.com",
];

const SPECIAL_CHARS: &[char] =
    &['\u{0}', '\u{7}', '\u{1b}', '\u{7f}', '\u{9f}', '\u{202E}', '\u{2067}', '\u{FFFD}', '\u{10FFFF}', '"', '\\', '|'];

const RUN_CHARS: &[char] = &['a', 'é', '€', '😀', ' ', '9', '\n'];
/// Every length limit of the parsers, and one past it.
const LIMITS: &[usize] = &[32, 33, 40, 41, 64, 65, 200, 201, 254, 255, 500, 501, 1000, 1001, 16_384, 16_385];

/// A hostile string: a nasty constant, arbitrary characters (control, private-use, astral), a
/// nasty with a control or bidi character spliced in, or a long run (crossing every length
/// limit: 40, 200, 500, 1000 characters, the 16 KiB body cap).
pub fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(NASTY).prop_map(str::to_owned),
        3 => prop::collection::vec(any::<char>(), 0..48).prop_map(String::from_iter),
        2 => (prop::sample::select(NASTY), prop::sample::select(SPECIAL_CHARS), any::<prop::sample::Index>())
            .prop_map(|(s, c, at)| {
                let chars: Vec<char> = s.chars().collect();
                let i = if chars.is_empty() { 0 } else { at.index(chars.len() + 1) };
                chars[..i].iter().chain(std::iter::once(&c)).chain(&chars[i..]).collect()
            }),
        1 => (prop::sample::select(RUN_CHARS), prop_oneof![prop::sample::select(LIMITS), 1usize..20_000])
            .prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

/// Numbers a `Value` can hold at the edges of every integer type (floats included); numbers it
/// cannot hold are text mutations (see [`mutated`]).
const EDGE_INTS: &[i64] = &[
    0,
    -1,
    1,
    2,
    255,
    256,
    1440,
    1441,
    32767,
    32768,
    65535,
    65536,
    i32::MAX as i64,
    i32::MAX as i64 + 1,
    i32::MIN as i64,
    u32::MAX as i64,
    u32::MAX as i64 + 1,
    i64::MAX,
    i64::MIN,
];

const EDGE_FLOATS: &[f64] = &[0.5, -0.0, 1e308, -1e308, f64::MIN_POSITIVE, 2.5e-320, 1.0e15];

pub fn hostile_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(EDGE_INTS).prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(EDGE_FLOATS).prop_map(Value::from),
    ]
}

/// Any JSON value, leaning on the hostile ones; nesting stays shallow (deep nesting is a text
/// mutation, so the harness never builds, prints or drops a deep `Value` itself).
pub fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        hostile_number(),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((hostile_string(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    At(usize),
}

/// Every path in `v` (the root included), parents before children.
fn paths(v: &Value) -> Vec<Vec<Seg>> {
    fn walk(v: &Value, here: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
        out.push(here.clone());
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    here.push(Seg::Key(k.clone()));
                    walk(child, here, out);
                    here.pop();
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    here.push(Seg::At(i));
                    walk(child, here, out);
                    here.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn at_mut<'a>(v: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, seg| match seg {
        Seg::Key(k) => v.get_mut(k.as_str()),
        Seg::At(i) => v.get_mut(*i),
    })
}

/// One edit of a document.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Replace the value at a path.
    Replace(prop::sample::Index, Value),
    /// Remove the member (or element) at a path.
    Remove(prop::sample::Index),
    /// Add a member to the object at (or above) a path.
    AddKey(prop::sample::Index, String, Value),
    /// Replace the value at a path with a string (the most common wrong type).
    Stringify(prop::sample::Index, String),
    /// Replace a number with another (same type, hostile value: past a limit, negative, huge),
    /// which reaches the validation behind the parser.
    Renumber(prop::sample::Index, Value),
    /// Replace a string with a hostile one, likewise.
    Restring(prop::sample::Index, String),
    /// Repeat the first member of the object at (or above) a path, with another value: a
    /// duplicate key.
    DuplicateKey(prop::sample::Index, Value),
    /// Wrap the value at a path in `n` arrays or objects (text level).
    Nest(prop::sample::Index, usize, bool),
    /// A number JSON allows but no Rust type holds, at a path (text level).
    HugeNumber(prop::sample::Index, &'static str),
    /// Cut the text at a byte.
    Truncate(prop::sample::Index),
    /// Overwrite a byte (invalid UTF-8 included).
    Byte(prop::sample::Index, u8),
    /// Text before or after the document.
    Affix(bool, &'static str),
}

const HUGE_NUMBERS: &[&str] = &[
    "1e400",
    "-1e400",
    "123456789012345678901234567890",
    "-123456789012345678901234567890",
    "0.0000000000000000000000000000000000000001",
    "1E+2",
    "-0",
    "-0.0",
    "1.0",
    "2.0e0",
];

const AFFIXES: &[&str] = &["\u{FEFF}", " ", "\n", "x", "{}", ",", "\u{0}", "[", "]", "}", "/*c*/", "\u{a0}"];

pub fn edit() -> impl Strategy<Value = Edit> {
    let ix = any::<prop::sample::Index>;
    prop_oneof![
        4 => (ix(), hostile_value()).prop_map(|(i, v)| Edit::Replace(i, v)),
        2 => ix().prop_map(Edit::Remove),
        1 => (ix(), hostile_string(), hostile_value()).prop_map(|(i, k, v)| Edit::AddKey(i, k, v)),
        2 => (ix(), hostile_string()).prop_map(|(i, s)| Edit::Stringify(i, s)),
        4 => (ix(), hostile_number()).prop_map(|(i, n)| Edit::Renumber(i, n)),
        4 => (ix(), hostile_string()).prop_map(|(i, s)| Edit::Restring(i, s)),
        1 => (ix(), hostile_value()).prop_map(|(i, v)| Edit::DuplicateKey(i, v)),
        1 => (ix(), prop_oneof![1usize..140, Just(127), Just(128), Just(129), 140usize..5000], any::<bool>())
            .prop_map(|(i, n, arr)| Edit::Nest(i, n, arr)),
        2 => (ix(), prop::sample::select(HUGE_NUMBERS)).prop_map(|(i, n)| Edit::HugeNumber(i, n)),
        1 => ix().prop_map(Edit::Truncate),
        1 => (ix(), any::<u8>()).prop_map(|(i, b)| Edit::Byte(i, b)),
        1 => (any::<bool>(), prop::sample::select(AFFIXES)).prop_map(|(pre, s)| Edit::Affix(pre, s)),
    ]
}

/// A marker no document contains, swapped for raw text after serialising.
const HOLE: &str = "\u{1}hole\u{1}";

/// `doc` with `edits` applied, as the bytes a client would send.
pub fn apply(doc: &Value, edits: &[Edit]) -> Vec<u8> {
    let mut v = doc.clone();
    // Text-level edits leave a placeholder string in the tree, replaced after serialising.
    let mut raw: Vec<(String, String)> = Vec::new();
    let mut text_edits: Vec<&Edit> = Vec::new();
    for e in edits {
        let ps = paths(&v);
        let pick = |i: &prop::sample::Index| ps[i.index(ps.len())].clone();
        match e {
            Edit::Replace(i, new) => {
                if let Some(slot) = at_mut(&mut v, &pick(i)) {
                    *slot = new.clone();
                }
            }
            Edit::Stringify(i, s) => {
                if let Some(slot) = at_mut(&mut v, &pick(i)) {
                    *slot = Value::String(s.clone());
                }
            }
            Edit::Renumber(i, n) => {
                if let Some(slot) = pick_where(&mut v, i, Value::is_number) {
                    *slot = n.clone();
                }
            }
            Edit::Restring(i, new) => {
                if let Some(slot) = pick_where(&mut v, i, Value::is_string) {
                    *slot = Value::String(new.clone());
                }
            }
            Edit::Remove(i) => {
                let mut p = pick(i);
                if let Some(last) = p.pop() {
                    match (at_mut(&mut v, &p), last) {
                        (Some(Value::Object(m)), Seg::Key(k)) => {
                            m.remove(&k);
                        }
                        (Some(Value::Array(a)), Seg::At(i)) if i < a.len() => {
                            a.remove(i);
                        }
                        _ => {}
                    }
                }
            }
            Edit::AddKey(i, k, new) => {
                if let Some(Value::Object(m)) = nearest_object(&mut v, pick(i)) {
                    m.insert(k.clone(), new.clone());
                }
            }
            Edit::DuplicateKey(i, new) => {
                if let Some(Value::Object(m)) = nearest_object(&mut v, pick(i)) {
                    if let Some(first) = m.keys().next().cloned() {
                        // serde_json's Map cannot hold a key twice: mark it, write it as text.
                        let tag = format!("{HOLE}{}", raw.len());
                        let dup = format!("{}:{}", Value::String(first), new);
                        m.insert(tag.clone(), Value::Null);
                        raw.push((format!("{}:null", Value::String(tag)), dup));
                    }
                }
            }
            Edit::Nest(i, n, arrays) => {
                if let Some(slot) = at_mut(&mut v, &pick(i)) {
                    let inner = slot.to_string();
                    let tag = format!("{HOLE}{}", raw.len());
                    let (open, close) = if *arrays { ("[", "]") } else { ("{\"k\":", "}") };
                    raw.push((
                        Value::String(tag.clone()).to_string(),
                        format!("{}{inner}{}", open.repeat(*n), close.repeat(*n)),
                    ));
                    *slot = Value::String(tag);
                }
            }
            Edit::HugeNumber(i, n) => {
                if let Some(slot) = at_mut(&mut v, &pick(i)) {
                    let tag = format!("{HOLE}{}", raw.len());
                    raw.push((Value::String(tag.clone()).to_string(), (*n).to_string()));
                    *slot = Value::String(tag);
                }
            }
            Edit::Truncate(_) | Edit::Byte(..) | Edit::Affix(..) => text_edits.push(e),
        }
    }
    let mut text = v.to_string();
    for (hole, with) in &raw {
        text = text.replacen(hole.as_str(), with, 1);
    }
    let mut bytes = text.into_bytes();
    for e in text_edits {
        match e {
            Edit::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
            Edit::Byte(i, b) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes[at] = *b;
            }
            Edit::Affix(prefix, s) if *prefix => bytes.splice(0..0, s.bytes()).for_each(drop),
            Edit::Affix(_, s) => bytes.extend_from_slice(s.as_bytes()),
            _ => {}
        }
    }
    bytes
}

/// The value at one of the paths whose value passes `keep` (none: no edit).
fn pick_where<'a>(v: &'a mut Value, i: &prop::sample::Index, keep: fn(&Value) -> bool) -> Option<&'a mut Value> {
    let candidates: Vec<Vec<Seg>> = paths(v).into_iter().filter(|p| at_mut(v, p).is_some_and(|x| keep(x))).collect();
    if candidates.is_empty() {
        return None;
    }
    let p = candidates[i.index(candidates.len())].clone();
    at_mut(v, &p)
}

fn nearest_object(v: &mut Value, mut path: Vec<Seg>) -> Option<&mut Value> {
    loop {
        let is_object = matches!(at_mut(v, &path), Some(Value::Object(_)));
        if is_object || path.is_empty() {
            return at_mut(v, &path).filter(|x| x.is_object());
        }
        path.pop();
    }
}

/// A request or message body. Its `Debug` is a byte-string literal, so a minimal failing input
/// can be pasted into a regression test as it is printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text: String = self.0.iter().flat_map(|b| std::ascii::escape_default(*b)).map(char::from).collect();
        write!(f, "b\"{text}\"")
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// One of `valid` with 1..=3 hostile edits, as bytes.
pub fn mutated(valid: Vec<Value>) -> impl Strategy<Value = Bytes> {
    (prop::sample::select(valid), prop::collection::vec(edit(), 1..=3))
        .prop_map(|(doc, edits)| Bytes(apply(&doc, &edits)))
}

/// Arbitrary bytes, and arbitrary text (most parsers give up at the first byte otherwise).
pub fn junk() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256).prop_map(Bytes),
        prop::collection::vec(any::<char>(), 0..256).prop_map(|c| Bytes(String::from_iter(c).into_bytes())),
        hostile_value().prop_map(|v| Bytes(v.to_string().into_bytes())),
    ]
}

/// Bytes for a parser: junk, or (mostly) one valid document with hostile edits.
pub fn input(valid: Vec<Value>) -> impl Strategy<Value = Bytes> {
    prop_oneof![1 => junk(), 3 => mutated(valid)]
}

/// Bytes in a failure message: the first 300 as a byte-string literal.
pub fn show(bytes: &[u8]) -> String {
    let head = Bytes(bytes.iter().take(300).copied().collect());
    format!("{head:?} ({} bytes)", bytes.len())
}
