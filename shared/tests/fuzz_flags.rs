//! Fuzz target: flag values (the raw strings SSM holds and the flag approver receives), whole
//! flag sets loaded from SSM, change requests, and the report rendered from a set. Bounded by
//! `PROPTEST_CASES`; see docs/testing.md, "Fuzzing".
//!
//! Property: nothing panics; a refused value is a `FlagValueError` naming the flag, short and
//! free of raw control characters (it goes to logs and API answers); an accepted value passes
//! its type's check and survives the SSM round trip; a set built from any raw values holds only
//! valid values; an accepted change list is valid, distinct and really changes something; the
//! report's tables keep their columns whatever the values.

#[path = "support/hostile.rs"]
mod hostile;

use holdfast_shared::flags::{
    check, check_break_glass, render_flag_set_report, validate_changes, ChangeRequest, Environment, FlagProblem,
    FlagSet, FlagValue, MAX_CHANGES, REGISTRY,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// A flag name: mostly registered ones (the interesting parsers), sometimes anything.
fn flag_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(REGISTRY.iter().map(|d| d.name).collect::<Vec<_>>()).prop_map(str::to_owned),
        1 => hostile::hostile_string(),
    ]
}

/// A raw value: valid-looking for some flag (every default and kill value), or hostile.
fn raw_value() -> impl Strategy<Value = String> {
    let mut typical: Vec<String> = Vec::new();
    for d in REGISTRY {
        for env in Environment::ALL {
            typical.push(d.default_for(env).to_ssm_string());
        }
        if let Some(v) = d.kill_value() {
            typical.push(v.to_ssm_string());
        }
    }
    typical.extend(
        ["0", "1", "100", "101", "-1", "59", "60", "900", "901", "1440", "1441", " true\n", "resend"].map(String::from),
    );
    prop_oneof![2 => prop::sample::select(typical), 3 => hostile::hostile_string()]
}

fn environment() -> impl Strategy<Value = Environment> {
    prop::sample::select(Environment::ALL.to_vec())
}

/// No raw control character (a log line or a Markdown table would break on one).
fn printable(s: &str) -> bool {
    !s.chars().any(|c| c.is_control() && c != '\n')
}

#[test]
fn fuzz_flag_values() {
    hostile::run("flag values", 20000, (0..REGISTRY.len(), raw_value()), |(i, raw)| {
        let def = &REGISTRY[i];
        match def.parse(&raw) {
            Ok(v) => {
                prop_assert!(def.check(&v).is_ok(), "{} accepted {raw:?} but its check refuses it", def.name);
                prop_assert_eq!(def.parse(&v.to_ssm_string()), Ok(v.clone()), "SSM round trip");
                if let FlagValue::Text(t) = &v {
                    prop_assert!(!t.chars().any(char::is_control), "text with a control character accepted");
                }
                let json = serde_json::to_string(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let back: FlagValue = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(back, v);
            }
            Err(e) => {
                prop_assert_eq!(e.flag, def.name);
                let shown = e.to_string();
                prop_assert!(printable(&shown), "raw control character in {shown:?}");
                // The value is quoted as at most 40 (escaped) characters and a length.
                prop_assert!(
                    e.found.chars().count() <= 40 * 10 + 32,
                    "error carries the whole value: {}",
                    e.found.len()
                );
                if def.is_secret() {
                    prop_assert_eq!(e.found.as_str(), "<redacted>");
                }
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_flag_value_json() {
    hostile::run("flag value JSON", 8000, hostile::junk(), |bytes| {
        if let Ok(v) = serde_json::from_slice::<FlagValue>(&bytes) {
            let again: FlagValue =
                serde_json::from_str(&serde_json::to_string(&v).map_err(|e| TestCaseError::fail(e.to_string()))?)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(again, v);
        }
        Ok(())
    });
}

#[test]
fn fuzz_flag_sets_and_changes() {
    let raw_set = prop::collection::vec((flag_name(), raw_value()), 0..24);
    let changes = prop::collection::vec((flag_name(), raw_value()), 0..=MAX_CHANGES + 1);
    hostile::run("flag sets and changes", 4000, (environment(), raw_set, changes), |(env, raw, requests)| {
        let (set, problems) = FlagSet::from_raw(env, &raw);
        for (def, value) in set.iter() {
            prop_assert!(def.check(value).is_ok(), "{} holds an invalid value", def.name);
        }
        prop_assert_eq!(set.iter().count(), REGISTRY.len());
        let unknown = raw.iter().filter(|(n, _)| !REGISTRY.iter().any(|d| d.name == n)).count();
        prop_assert!(problems.len() >= unknown, "an unknown flag was not reported");
        for p in &problems {
            // An invalid value is quoted escaped. (An unknown name is echoed as SSM gave it: SSM
            // parameter names are limited to a-zA-Z0-9_.-/, and the loader logs codes only.)
            if let FlagProblem::InvalidValue { .. } = p {
                prop_assert!(printable(&p.to_string()), "raw control character in {p}");
            }
        }
        let _ = check(&set, env);

        // The report: one row per flag, every row with its five column separators.
        let report = render_flag_set_report(&set, env);
        let rows: Vec<&str> = report.lines().filter(|l| l.starts_with("| `")).collect();
        prop_assert_eq!(rows.len(), REGISTRY.len(), "{}", report);
        for row in rows {
            let bars = row.char_indices().filter(|&(i, c)| c == '|' && !row[..i].ends_with('\\')).count();
            prop_assert_eq!(bars, 5, "a value broke the table: {:?}", row);
        }
        prop_assert!(printable(&report));

        let requests: Vec<ChangeRequest> = requests.into_iter().map(|(f, v)| ChangeRequest::new(f, v)).collect();
        if let Ok(accepted) = validate_changes(&set, env, &requests) {
            prop_assert!(!accepted.is_empty() && accepted.len() <= MAX_CHANGES);
            for (i, (def, value)) in accepted.iter().enumerate() {
                prop_assert!(def.check(value).is_ok());
                prop_assert!(set.get(def.name) != Some(value), "a no-op change was accepted");
                prop_assert!(accepted[..i].iter().all(|(d, _)| d.name != def.name), "a flag twice");
            }
            let _ = check_break_glass(&accepted);
        }
        Ok(())
    });
}
