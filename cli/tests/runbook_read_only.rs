//! The runbooks' read-only blocks (```sh read-only```) run, as written, against a real stack:
//! a fresh migrated database and the AWS emulator. An on-call engineer's first look must work.

#[path = "../src/runbook_commands.rs"]
#[allow(dead_code)]
mod runbook_commands;

use holdfast_tests::{TestAws, TestDb};
use runbook_commands::{quoted_commands, DOCUMENTS};
use std::path::Path;

#[tokio::test]
async fn read_only_runbook_commands_run_against_the_local_stack() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf();
    let db = TestDb::new().await;
    let aws = TestAws::new().await;
    let sqs = aws_sdk_sqs::Client::new(&aws.sdk);
    let dlq = sqs.create_queue().queue_name(aws.name("email-dlq")).send().await.expect("create DLQ");
    let dlq_url = dlq.queue_url().expect("queue url").to_owned();

    let mut ran = Vec::new();
    for doc in DOCUMENTS {
        let text = std::fs::read_to_string(root.join(doc)).expect("readable doc");
        for q in quoted_commands(&text).into_iter().filter(|q| q.read_only) {
            // Through a shell, as the reader pastes it ($EMAIL_DLQ_URL expands).
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("exec \"$HOLDFAST_BIN\" {}", q.text))
                .current_dir(&root)
                .env("HOLDFAST_BIN", env!("CARGO_BIN_EXE_holdfast"))
                .env("DATABASE_URL", &db.url)
                .env("HOLDFAST_SSM_ROOT", format!("/{}", aws.prefix))
                .env("EMAIL_DLQ_URL", &dlq_url)
                .env("RUST_LOG", "warn")
                .output()
                .expect("run the CLI");
            assert!(
                out.status.success(),
                "{doc}:{}: `holdfast {}` failed ({}):\n{}",
                q.line,
                q.text,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!out.stdout.is_empty(), "{doc}:{}: `holdfast {}` printed nothing", q.line, q.text);
            ran.push(q.text);
        }
    }
    // One block per runbook at least: holds, email, metrics, flags (audit + matrix).
    assert!(ran.len() >= 5, "only {} read-only commands found: {ran:?}", ran.len());
}
