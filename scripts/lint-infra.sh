#!/usr/bin/env bash
# Lint and scan the AWS SAM template and the migrations, offline:
#   1. cfn-lint  - CloudFormation/SAM schema and best practices (validates the SAM source).
#   2. checkov   - security policy scan.
#   3. SAM transform - expands the template with AWS's own translator (what CloudFormation does
#      at deploy time), runs cfn-lint on the expanded CloudFormation, and checks project
#      invariants: queues encrypted (compensates the CKV_AWS_27 suppression), visibility timeout
#      >= 6x the sender's timeout, maxReceiveCount 5, arm64, managed log groups with JSON logs,
#      X-Ray tracing, every function behind the alias `live` with a canary deployment whose
#      rollback alarms include the SLO burn-rate alarms and every event source on that alias,
#      the holds API's pre-traffic smoke hook (and its verdict/reporting logic, run here with
#      stubbed AWS clients), a runbook in every alarm, and the inline dashboard body in step with
#      dashboards/cloudwatch/holdfast.json.
#   4. squawk - migrations/*.sql: new migrations against .squawk.toml, the applied ones (its
#      excluded_paths) against migrations/squawk-applied.toml; every exception has its reason there.
# Any finding fails the run (non-zero exit). Template suppressions live in the template's
# Metadata, each with its reason (list: infra/README.md).
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
SQUAWK_VERSION="2.70.0"
VENV="$ROOT/.local/venv-lint"
STAMP="$VENV/.pins"
PINS="cfn-lint==$CFN_LINT_VERSION checkov==$CHECKOV_VERSION aws-sam-translator==$SAM_TRANSLATOR_VERSION squawk-cli==$SQUAWK_VERSION"
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


def ref(v):
    """The logical id a {"Ref": id} or {"Fn::GetAtt": [id, ...]} points at, else None."""
    if isinstance(v, dict) and "Ref" in v:
        return v["Ref"]
    if isinstance(v, dict) and "Fn::GetAtt" in v:
        return v["Fn::GetAtt"][0]
    return None


aliases = of("AWS::Lambda::Alias")
hooks = set()  # functions CodeDeploy runs as lifecycle hooks of some alias
for a_id in aliases:
    upd = res[a_id].get("UpdatePolicy", {}).get("CodeDeployLambdaAliasUpdate", {})
    hooks |= {ref(upd[k]) for k in ("BeforeAllowTrafficHook", "AfterAllowTrafficHook") if k in upd}
functions = {n: p for n, p in of("AWS::Lambda::Function").items() if n not in hooks}
for name, p in of("AWS::Lambda::Function").items():
    if name in hooks:  # CodeDeploy hooks: inline Python (boto3 in the runtime), no build step
        if p.get("Architectures") != ["arm64"] or not str(p.get("Runtime", "")).startswith("python3"):
            problems.append(f"{name}: hook must be python3.x on arm64")
        if not p.get("FunctionName", {}).get("Fn::Sub", "").startswith("CodeDeployHook_"):
            problems.append(f"{name}: hook name must start with CodeDeployHook_ (the deployment role invokes only those)")
    elif p.get("Architectures") != ["arm64"] or p.get("Runtime") != "provided.al2023":
        problems.append(f"{name}: must be provided.al2023 on arm64")
    lc = p.get("LoggingConfig", {})
    if "LogGroup" not in lc:
        problems.append(f"{name}: log group not managed by the stack")
    if lc.get("LogFormat") != "JSON" or lc.get("ApplicationLogLevel") != "INFO" or lc.get("SystemLogLevel") != "WARN":
        problems.append(f"{name}: LoggingConfig must be JSON with ApplicationLogLevel INFO, SystemLogLevel WARN")
    if name not in hooks and p.get("TracingConfig", {}).get("Mode") != "Active":
        problems.append(f"{name}: X-Ray tracing must be Active")

# Safe delivery. The burn-rate alarms are the SLO composites; every function's alias `live` is
# moved by a CodeDeploy canary that rolls back when one of them is in ALARM.
burn = {n for n, p in of("AWS::CloudWatch::CompositeAlarm").items()
        if re.search(r"-slo-[a-z]+-burn$", p.get("AlarmName", {}).get("Fn::Sub", ""))}
if len(burn) < 2:
    problems.append(f"SLO burn-rate composite alarms not found (found {sorted(burn)})")
if expanded["Parameters"].get("RollbackOnBurnAlarms", {}).get("Default") != "true":
    problems.append("parameter RollbackOnBurnAlarms must default to \"true\"")
groups = of("AWS::CodeDeploy::DeploymentGroup")
alias_of = {}
for a_id, a in aliases.items():
    fn = ref(a.get("FunctionName"))
    if fn not in functions:
        continue
    if a.get("Name") != "live":
        problems.append(f"{a_id}: alias must be named live")
    alias_of[fn] = a_id
    upd = res[a_id].get("UpdatePolicy", {}).get("CodeDeployLambdaAliasUpdate")
    group = groups.get(ref((upd or {}).get("DeploymentGroupName")))
    if group is None:
        problems.append(f"{fn}: alias has no CodeDeploy deployment group")
        continue
    config = json.dumps(group.get("DeploymentConfigName"))
    if not re.search(r"Canary|Linear", config):
        problems.append(f"{fn}: deployment must be a canary or linear, not {config}")
    alarms = group.get("AlarmConfiguration", {})
    if "Fn::If" in alarms:  # RollbackOnBurnAlarms: the "true" branch is the configuration
        cond, alarms, _ = alarms["Fn::If"]
        if cond != "RollbackOnBurnAlarmsEnabled":
            problems.append(f"{fn}: rollback alarms switched by {cond}")
    names = {ref(a.get("Name")) for a in alarms.get("Alarms", [])}
    if alarms.get("Enabled") is not True or not burn <= names:
        problems.append(f"{fn}: rollback alarms {sorted(n for n in names if n)} lack the burn-rate alarms {sorted(burn)}")
    if "DEPLOYMENT_STOP_ON_ALARM" not in group.get("AutoRollbackConfiguration", {}).get("Events", []):
        problems.append(f"{fn}: no automatic rollback on alarm")
    if fn == "HoldsApiFunction" and ref(upd.get("BeforeAllowTrafficHook")) not in hooks:
        problems.append("HoldsApiFunction: no pre-traffic smoke hook")
for fn in functions:
    if fn not in alias_of:
        problems.append(f"{fn}: not published behind an alias (AutoPublishAlias)")
# Every way in goes through the alias (SAM wires events to it when AutoPublishAlias is set).
for name, p in of("AWS::Lambda::EventSourceMapping").items():
    if ref(p.get("FunctionName")) not in alias_of.values():
        problems.append(f"{name}: event source mapping does not invoke an alias")
for name, p in of("AWS::Lambda::Permission").items():
    if ref(p.get("FunctionName")) not in alias_of.values():
        problems.append(f"{name}: invoke permission not on an alias")
for name, p in of("AWS::Events::Rule").items():
    for t in p.get("Targets", []):
        if ref(t.get("Arn")) not in alias_of.values():
            problems.append(f"{name}: schedule target {t.get('Id')} is not an alias")
for name, p in of("AWS::ApiGatewayV2::Api").items():
    for path, ops in p.get("Body", {}).get("paths", {}).items():
        for verb, op in ops.items():
            uri = json.dumps(op.get("x-amazon-apigateway-integration", {}).get("uri", ""))
            if not any("${" + a + "}" in uri for a in alias_of.values()):
                problems.append(f"{name}: {verb.upper()} {path} is not integrated with an alias")

# The smoke hook's own logic, with stubbed AWS clients: a 404 not_found from the version under
# deployment (base64 or plain body) reports Succeeded; anything else reports Failed, and it
# always reports. Its event against the real handler: tests/tests/smoke_hook.rs.
cases = []
for hook in sorted(hooks):
    import base64, types
    code = res[hook]["Properties"]["Code"]["ZipFile"]
    mod = types.ModuleType("index")
    exec(compile(code, f"{hook}/index.py", "exec"), mod.__dict__)  # noqa: S102 - our own template
    target = "arn:aws:lambda:eu-west-1:123456789012:function:holdfast-prod-holds-api:7"

    class Payload:
        def __init__(self, b):
            self.b = b

        def read(self):
            return self.b

    def answer(status, body, b64=True, version="7", error=None, ctype="application/json"):
        raw = json.dumps(body).encode()
        resp = {"statusCode": status, "headers": {"content-type": ctype},
                "body": base64.b64encode(raw).decode() if b64 else raw.decode(), "isBase64Encoded": b64}
        out = {"Payload": Payload(json.dumps(resp).encode()), "ExecutedVersion": version}
        if error:
            out["FunctionError"] = error
        return out

    def run(outcome, configured=target):
        calls = {}

        class Lam:
            def invoke(self, **kw):
                calls["invoke"] = kw
                if isinstance(outcome, Exception):
                    raise outcome
                return outcome

        class CodeDeploy:
            def put_lifecycle_event_hook_execution_status(self, **kw):
                calls["report"] = kw

        mod.clients = lambda: (Lam(), CodeDeploy())
        import os
        os.environ.pop("TARGET_VERSION_ARN", None)
        if configured:
            os.environ["TARGET_VERSION_ARN"] = configured
        mod.handler({"DeploymentId": "d-1", "LifecycleEventHookExecutionId": "h-1"}, None)
        return calls

    nf = {"error": {"code": "not_found", "message": "hold not found"}}
    cases = [
        ("404 not_found, base64 body", answer(404, nf), "Succeeded"),
        ("404 not_found, text body", answer(404, nf, b64=False), "Succeeded"),
        ("503 database_unavailable", answer(503, {"error": {"code": "database_unavailable"}}), "Failed"),
        ("401 claims not read", answer(401, {"error": {"code": "unauthenticated"}}), "Failed"),
        ("404 route_not_found", answer(404, {"error": {"code": "route_not_found"}}), "Failed"),
        ("404 not JSON", answer(404, nf, ctype="text/plain"), "Failed"),
        ("function error", answer(404, nf, error="Unhandled"), "Failed"),
        ("another version ran", answer(404, nf, version="6"), "Failed"),
        ("invoke raised", RuntimeError("AccessDenied"), "Failed"),
    ]
    for what, outcome, want in cases:
        calls = run(outcome)
        got = calls.get("report", {})
        if got != {"deploymentId": "d-1", "lifecycleEventHookExecutionId": "h-1", "status": want}:
            problems.append(f"{hook}: {what}: reported {got or 'nothing'}, expected {want}")
        if "invoke" not in calls:
            problems.append(f"{hook}: {what}: never invoked the target version")
            continue
        sent = json.loads(calls["invoke"]["Payload"])
        if (calls["invoke"]["FunctionName"] != target or calls["invoke"].get("InvocationType", "RequestResponse") != "RequestResponse"
                or sent["requestContext"]["http"]["method"] != "GET" or not sent["rawPath"].startswith("/holds/")
                or not sent["requestContext"]["authorizer"]["jwt"]["claims"].get("sub")):
            problems.append(f"{hook}: {what}: did not invoke the target version with an authenticated GET /holds/<id>")
    # A hook that cannot even start its test must still report, or CodeDeploy waits an hour.
    calls = run(RuntimeError("no function named ''"), configured=None)
    if calls.get("report", {}).get("status") != "Failed":
        problems.append(f"{hook}: without TARGET_VERSION_ARN it reported {calls.get('report') or 'nothing'}, expected Failed")
    cases.append("no target configured")
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
print(f"expanded: {len(res)} resources; dashboard body is valid JSON; invariants hold; "
      f"{len(alias_of)} functions behind canary aliases with rollback on {sorted(burn)}; "
      f"{len(hooks)} smoke hook(s) checked against {len(cases)} stubbed outcomes")
PY
  "$VENV/bin/cfn-lint" "$EXPANDED" && dashboard check; then
  log "SAM transform + invariants: clean ($(since "$start"))"
else
  log "SAM transform + invariants: FAILED"
  status=1
fi

start=$(now_ms)
log "squawk $SQUAWK_VERSION: migrations/*.sql (new: .squawk.toml; applied: migrations/squawk-applied.toml)"
# The applied migrations are .squawk.toml's excluded_paths: one list, read from there.
mapfile -t APPLIED < <("$VENV/bin/python" -c \
  'import tomllib; print("\n".join(tomllib.load(open(".squawk.toml", "rb"))["excluded_paths"]))')
# --no-error-on-unmatched-pattern: no new migration at all is fine; an applied file that is
# missing is not (the second run names them explicitly).
if "$VENV/bin/squawk" -c .squawk.toml --no-error-on-unmatched-pattern migrations/*.sql &&
  "$VENV/bin/squawk" -c migrations/squawk-applied.toml "${APPLIED[@]}"; then
  log "squawk: clean ($(since "$start"))"
else
  log "squawk: FAILED (fix the migration, or put '-- squawk-ignore <rule> -- <reason>' before the statement; see .squawk.toml)"
  status=1
fi

exit "$status"
