#!/usr/bin/env bash
# Lint and scan the AWS SAM template, offline:
#   1. cfn-lint  - CloudFormation/SAM schema and best practices (validates the SAM source).
#   2. checkov   - security policy scan.
#   3. SAM transform - expands the template with AWS's own translator (what CloudFormation does
#      at deploy time), runs cfn-lint on the expanded CloudFormation, and checks project
#      invariants: queues encrypted (compensates the CKV_AWS_27 suppression), visibility timeout
#      >= 6x the sender's timeout, maxReceiveCount 5, arm64, managed log groups, a runbook in
#      every alarm, and the inline dashboard body in step with dashboards/cloudwatch/holdfast.json.
# Any finding fails the run (non-zero exit). Suppressions live in the template's Metadata, each
# with its reason (list: infra/README.md).
#
# Usage: scripts/lint-infra.sh [--sync-dashboard] [template]
#   --sync-dashboard  rewrite the template's DashboardBody from dashboards/cloudwatch/holdfast.json
#                     (the importable copy), then lint.
#   template          another template to lint (default infra/template.yaml; used to test this script).
#
# Idempotent: the tools live in a project-local venv (.local/venv-lint), installed once at
# pinned versions; later runs reuse it (and reinstall only if a pin changes).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CFN_LINT_VERSION="1.58.0"
CHECKOV_VERSION="3.3.30"
SAM_TRANSLATOR_VERSION="1.115.0"
VENV="$ROOT/.local/venv-lint"
STAMP="$VENV/.pins"
PINS="cfn-lint==$CFN_LINT_VERSION checkov==$CHECKOV_VERSION aws-sam-translator==$SAM_TRANSLATOR_VERSION"
DASHBOARD="dashboards/cloudwatch/holdfast.json"

SYNC=0
if [ "${1:-}" = "--sync-dashboard" ]; then SYNC=1; shift; fi
TEMPLATE="${1:-infra/template.yaml}"

log() { printf '[lint-infra] %s\n' "$*" >&2; }
now_ms() { date +%s%3N; }
since() { local ms=$(($(now_ms) - $1)); printf '%d.%01d s' $((ms / 1000)) $(((ms % 1000) / 100)); }

if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$PINS" ]; then
  log "installing $PINS into $VENV (one-off, ~1 min)"
  mkdir -p "$ROOT/.local"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q --disable-pip-version-check $PINS
  echo "$PINS" >"$STAMP"
fi

# ------------------------------------------------------------------ dashboard body (sync/check)
# The deployed dashboard is the importable copy with its concrete environment ("prod") and
# region ("us-east-1") turned into ${Environment} / ${AWS::Region}, plus an alarm-status widget
# under the header (alarm ARNs are account-specific, so the importable copy cannot carry it).
dashboard() { # $1 = sync | check
  "$VENV/bin/python" - "$1" "$TEMPLATE" "$DASHBOARD" <<'PY'
import json, re, sys

mode, template_path, dashboard_path = sys.argv[1:4]
COPY_ENV, COPY_REGION = "prod", "us-east-1"  # concrete values used by the importable copy
HEADER = "      DashboardBody: !Sub |\n"
INDENT = " " * 8

src = json.load(open(dashboard_path))
text = open(template_path).read()

# Alarms to show: every alarm the template names, minus the burn-rate legs (their composites
# are shown instead).
names = [n for n in re.findall(r"AlarmName: !Sub (holdfast-\$\{Environment\}-[a-z0-9-]+)", text)
         if not re.search(r"-(1h|5m|6h|30m)$", n)]
ALARMS_H = 4
widgets = []
for w in src["widgets"]:
    w = dict(w)
    if w.get("y", 0) >= 2:  # everything below the header moves down to make room
        w["y"] = w["y"] + ALARMS_H
    widgets.append(w)
alarm_widget = {"type": "alarm", "x": 0, "y": 2, "width": 24, "height": ALARMS_H,
                "properties": {"title": "Alarms", "alarms": [f"@@ALARM:{i}@@" for i in range(len(names))]}}
widgets.insert(1, alarm_widget)

head = {k: v for k, v in src.items() if k != "widgets"}
lines = ["{"] + [f'  {json.dumps(k)}: {json.dumps(v)},' for k, v in head.items()] + ['  "widgets": [']
lines += [f"    {json.dumps(w)}," for w in widgets]
lines[-1] = lines[-1].rstrip(",")
lines += ["  ]", "}"]
body = "\n".join(lines)
body = body.replace("${", "${!")  # literal ${ in the copy must survive !Sub
body = re.sub(rf"\b{re.escape(COPY_ENV)}\b", "${Environment}", body)
body = re.sub(rf"\b{re.escape(COPY_REGION)}\b", "${AWS::Region}", body)
body = re.sub(r"@@ALARM:([0-9]+)@@",  # after the escaping above: these ${...} are meant for !Sub
              lambda m: "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:"
              + names[int(m.group(1))],
              body)
assert "${!Environment}" not in body and "${!AWS::" not in body

# Round trip: substituting the copy's values back must give the copy (plus the alarm widget).
back = body.replace("${Environment}", COPY_ENV).replace("${AWS::Region}", COPY_REGION)
back = back.replace("${AWS::Partition}", "aws").replace("${AWS::AccountId}", "000000000000").replace("${!", "${")
parsed = json.loads(back)
del parsed["widgets"][1]
for w in parsed["widgets"]:
    if w.get("y", 0) >= 2 + ALARMS_H:
        w["y"] -= ALARMS_H
assert parsed == src, "dashboard round trip failed"

block = "".join(INDENT + l + "\n" for l in body.split("\n"))
start = text.index(HEADER) + len(HEADER)
end = start
rest = text[start:].split("\n")
for l in rest:  # the block scalar ends at the first non-empty line indented less than INDENT
    if l.strip() and not l.startswith(INDENT):
        break
    end += len(l) + 1
current = text[start:end].rstrip("\n") + "\n"
if mode == "sync":
    if current != block:
        open(template_path, "w").write(text[:start] + block + "\n" + text[end:].lstrip("\n"))
        print(f"{template_path}: DashboardBody rewritten from {dashboard_path}")
    else:
        print(f"{template_path}: DashboardBody already in step")
elif current != block:
    sys.exit(f"{template_path}: DashboardBody is out of step with {dashboard_path}; "
             "run ./scripts/lint-infra.sh --sync-dashboard")
else:
    print(f"dashboard body in step with {dashboard_path} ({len(names)} alarms shown)")
PY
}

if [ "$SYNC" = 1 ]; then
  dashboard sync
fi

status=0

start=$(now_ms)
log "cfn-lint $CFN_LINT_VERSION: $TEMPLATE"
if "$VENV/bin/cfn-lint" "$TEMPLATE"; then
  log "cfn-lint: clean ($(since "$start"))"
else
  log "cfn-lint: FAILED"
  status=1
fi

start=$(now_ms)
log "checkov $CHECKOV_VERSION: $TEMPLATE"
# --skip-download: offline, no platform calls. checkov exits non-zero on any failed check.
if "$VENV/bin/checkov" -f "$TEMPLATE" --framework cloudformation --skip-download --compact --quiet; then
  log "checkov: clean ($(since "$start"))"
else
  log "checkov: FAILED"
  status=1
fi

start=$(now_ms)
log "SAM transform (aws-sam-translator $SAM_TRANSLATOR_VERSION), cfn-lint on the expansion, invariants"
EXPANDED="$ROOT/.local/infra-expanded.json"
if AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-eu-west-1}" "$VENV/bin/python" - "$TEMPLATE" "$EXPANDED" <<'PY' &&
import json, re, sys
from cfnlint.decode import decode
from samtranslator.translator.transform import transform

template, matches = decode(sys.argv[1])
if matches:
    sys.exit(f"cannot parse {sys.argv[1]}: {matches}")
# `sam build`/`package` replace the local CodeUri with an S3 location; do the same here.
template["Globals"]["Function"]["CodeUri"] = "s3://placeholder/code.zip"


class NoManagedPolicyLookups:  # ManagedPolicyArns are full ARNs; no IAM calls needed
    def load(self):
        return {}


expanded = transform(template, {"Environment": "prod"}, NoManagedPolicyLookups())
with open(sys.argv[2], "w") as f:
    json.dump(expanded, f, indent=1, default=str)

res = expanded["Resources"]
problems = []

# The dashboard body is a !Sub string cfn-lint cannot parse: substitute and parse it here.
body = res["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
fake = {"Environment": "prod", "AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012",
        "AWS::Partition": "aws"}
try:
    json.loads(re.sub(r"\$\{([^}!]+)\}", lambda m: fake[m.group(1)], body))
except Exception as e:  # noqa: BLE001 - report any substitution or JSON error
    problems.append(f"Dashboard: body is not valid JSON after substitution: {e}")


def of(t):
    return {k: v.get("Properties", {}) for k, v in res.items() if v["Type"] == t}


for name, p in of("AWS::SQS::Queue").items():
    if p.get("SqsManagedSseEnabled") is not True and "KmsMasterKeyId" not in p:
        problems.append(f"{name}: queue not encrypted at rest")
sender_timeout = res["EmailSenderFunction"]["Properties"]["Timeout"]
if res["EmailQueue"]["Properties"]["VisibilityTimeout"] < 6 * sender_timeout:
    problems.append("EmailQueue: VisibilityTimeout < 6 x email sender timeout")
if res["EmailQueue"]["Properties"]["RedrivePolicy"].get("maxReceiveCount") != 5:
    problems.append("EmailQueue: maxReceiveCount must be 5")
for name, p in of("AWS::Lambda::Function").items():
    if p.get("Architectures") != ["arm64"] or p.get("Runtime") != "provided.al2023":
        problems.append(f"{name}: must be provided.al2023 on arm64")
    if "LogGroup" not in p.get("LoggingConfig", {}):
        problems.append(f"{name}: log group not managed by the stack")
for name, p in of("AWS::Logs::LogGroup").items():
    if "RetentionInDays" not in p:
        problems.append(f"{name}: no retention")
runbook = re.compile(r"docs/runbooks/(holds|email|metrics|feature-flags)\.md#[a-z0-9-]+")
for t in ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm"):
    for name, p in of(t).items():
        if not runbook.search(p.get("AlarmDescription", "")):
            problems.append(f"{name}: AlarmDescription names no runbook")
if problems:
    sys.exit("invariants violated:\n  " + "\n  ".join(problems))
print(f"expanded: {len(res)} resources; dashboard body is valid JSON; invariants hold")
PY
  "$VENV/bin/cfn-lint" "$EXPANDED" && dashboard check; then
  log "SAM transform + invariants: clean ($(since "$start"))"
else
  log "SAM transform + invariants: FAILED"
  status=1
fi

exit "$status"
