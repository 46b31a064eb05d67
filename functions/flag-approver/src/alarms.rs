//! The SLO burn-rate alarms a baking flag change is judged by, read from CloudWatch
//! (`DescribeAlarms`, metric and composite alarms). Their names are configuration:
//! `HOLDFAST_BURN_RATE_ALARMS`, comma separated, set by the template from the alarms themselves.

use chrono::{DateTime, Utc};
use holdfast_shared::flags::FiringAlarm;

/// The environment variable listing the burn-rate alarm names.
pub const BURN_RATE_ALARMS_VAR: &str = "HOLDFAST_BURN_RATE_ALARMS";

/// `DescribeAlarms` takes at most this many names per call.
const NAMES_PER_CALL: usize = 100;

pub struct BurnAlarms {
    client: aws_sdk_cloudwatch::Client,
    names: Vec<String>,
}

impl BurnAlarms {
    /// The alarms named in `names` (a comma-separated list; blanks and repeats are dropped).
    pub fn new(client: aws_sdk_cloudwatch::Client, names: &str) -> Self {
        let mut list: Vec<String> =
            names.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect();
        list.sort();
        list.dedup();
        Self { client, names: list }
    }

    /// The alarms named by `HOLDFAST_BURN_RATE_ALARMS` (none when unset).
    pub fn from_env(client: aws_sdk_cloudwatch::Client) -> Self {
        Self::new(client, &std::env::var(BURN_RATE_ALARMS_VAR).unwrap_or_default())
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The configured alarms in ALARM now, with when they entered it. A configured name
    /// CloudWatch does not know is logged (a misconfiguration: that alarm can revert nothing).
    /// The error is the SDK's diagnostics (alarm names only, no values).
    pub async fn firing(&self) -> Result<Vec<FiringAlarm>, String> {
        use aws_sdk_cloudwatch::types::{AlarmType, StateValue};
        let mut firing = Vec::new();
        let mut seen = Vec::new();
        for chunk in self.names.chunks(NAMES_PER_CALL) {
            let mut pages = self
                .client
                .describe_alarms()
                .set_alarm_names(Some(chunk.to_vec()))
                .alarm_types(AlarmType::MetricAlarm)
                .alarm_types(AlarmType::CompositeAlarm)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| format!("{}", aws_sdk_cloudwatch::error::DisplayErrorContext(&e)))?;
                let metric = page.metric_alarms.unwrap_or_default().into_iter().map(|a| {
                    (a.alarm_name, a.state_value, a.state_transitioned_timestamp.or(a.state_updated_timestamp))
                });
                let composite = page.composite_alarms.unwrap_or_default().into_iter().map(|a| {
                    (a.alarm_name, a.state_value, a.state_transitioned_timestamp.or(a.state_updated_timestamp))
                });
                for (name, state, at) in metric.chain(composite) {
                    let Some(name) = name else { continue };
                    seen.push(name.clone());
                    if state != Some(StateValue::Alarm) {
                        continue;
                    }
                    match at.and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos())) {
                        Some(since) => firing.push(FiringAlarm { name, since }),
                        // Without the time it entered ALARM it cannot be tied to a change.
                        None => tracing::warn!(alarm = %name, "burn-rate alarm in ALARM without a state timestamp"),
                    }
                }
            }
        }
        for missing in self.names.iter().filter(|n| !seen.contains(n)) {
            tracing::warn!(alarm = %missing, "configured burn-rate alarm does not exist ({BURN_RATE_ALARMS_VAR})");
        }
        Ok(firing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> aws_sdk_cloudwatch::Client {
        let conf = aws_sdk_cloudwatch::Config::builder()
            .behavior_version(aws_sdk_cloudwatch::config::BehaviorVersion::latest())
            .build();
        aws_sdk_cloudwatch::Client::from_conf(conf)
    }

    #[test]
    fn names_are_a_trimmed_deduplicated_list() {
        let a = BurnAlarms::new(
            client(),
            " holdfast-prod-holds-slo-fast-burn, ,holdfast-prod-holds-slo-slow-burn,holdfast-prod-holds-slo-fast-burn ",
        );
        assert_eq!(a.names(), ["holdfast-prod-holds-slo-fast-burn", "holdfast-prod-holds-slo-slow-burn"]);
        assert!(BurnAlarms::new(client(), "").names().is_empty());
    }
}
