//! Per-key-set rotation policy: `[key_sets.<set>]` tables in the file, `--key-set-policy
//! SET.FIELD=VALUE` on the command line, and the older general settings
//! (`--rotate-every-days`, `--overlap-hours`, `--prepublish-seconds`,
//! `--access-algorithm`, `--action-algorithm`), resolved into one validated
//! `KeySetPolicy` per set.
//!
//! Precedence, per set and field: the set's own field (flag over file), then the older
//! setting (flag over file; the general ones apply to the JWS sets `access` and `action`,
//! which always shared them), then the set's default (DESIGN §3: access and action 90 d /
//! 7 d, webhook 30 d / 3 d). An error names the field the offending value came from, e.g.
//! `key_sets.webhook.overlap_days` or `overlap_hours`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use tessera_common::keys::{Algorithm, KeySetName, KeySetPolicy, PolicySetting};

use super::{ConfigError, ServeArgs, invalid};

/// One `[key_sets.<set>]` table; every field is optional.
#[derive(Deserialize, Debug, Default, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeySetSettings {
    /// RS256, ES256 or EdDSA for `access` and `action`; HS256 for `webhook`.
    pub algorithm: Option<String>,
    /// Days a key signs before its scheduled successor takes over.
    pub rotate_every_days: Option<u64>,
    /// Days a replaced key keeps verifying.
    pub overlap_days: Option<u64>,
    /// Seconds a successor is published before it signs.
    pub prepublish_seconds: Option<u64>,
}

impl KeySetSettings {
    /// Returns these settings with each one left unset taken from `lower`.
    fn over(self, lower: KeySetSettings) -> KeySetSettings {
        KeySetSettings {
            algorithm: self.algorithm.or(lower.algorithm),
            rotate_every_days: self.rotate_every_days.or(lower.rotate_every_days),
            overlap_days: self.overlap_days.or(lower.overlap_days),
            prepublish_seconds: self.prepublish_seconds.or(lower.prepublish_seconds),
        }
    }
}

/// A value and the field it was read from, so a refusal can name it.
struct Sourced<T> {
    value: T,
    field: String,
}

const SECONDS_PER_HOUR: u64 = 3600;
const SECONDS_PER_DAY: u64 = 24 * SECONDS_PER_HOUR;

/// Resolves the policy of every key set. `max_access_ttl` is the longest access token
/// the issuer signs, which the access overlap must cover.
pub(super) fn policies(
    settings: &ServeArgs,
    max_access_ttl: Duration,
) -> Result<BTreeMap<KeySetName, KeySetPolicy>, ConfigError> {
    let from_flags = parse_flags(&settings.key_set_policy)?;
    let mut policies = BTreeMap::new();
    for key_set in KeySetName::ALL {
        let own = from_flags
            .get(&key_set)
            .cloned()
            .unwrap_or_default()
            .over(settings.key_sets.get(&key_set).cloned().unwrap_or_default());
        let (mut policy, fields) = resolve_set(key_set, &own, settings)?;
        if key_set == KeySetName::Access {
            policy.max_token_ttl = max_access_ttl;
        }
        policy.validate(key_set).map_err(|error| {
            let field = match error.setting() {
                PolicySetting::Algorithm => &fields.algorithm,
                PolicySetting::RotateEvery => &fields.rotate_every,
                PolicySetting::Overlap => &fields.overlap,
                PolicySetting::Prepublish => &fields.prepublish,
            };
            invalid(field, error)
        })?;
        policies.insert(key_set, policy);
    }
    Ok(policies)
}

/// The field each part of a resolved policy came from.
struct PolicyFields {
    algorithm: String,
    rotate_every: String,
    overlap: String,
    prepublish: String,
}

fn resolve_set(
    key_set: KeySetName,
    own: &KeySetSettings,
    settings: &ServeArgs,
) -> Result<(KeySetPolicy, PolicyFields), ConfigError> {
    let default = KeySetPolicy::default_for(key_set);
    let own_field = |name: &str| format!("key_sets.{key_set}.{name}");
    // The older general settings only ever applied to the JWS sets.
    let general = |value: Option<u64>, name: &str| {
        value
            .filter(|_| key_set.is_published())
            .map(|value| (value, name.to_owned()))
    };
    let legacy_algorithm = match key_set {
        KeySetName::Access => settings
            .access_algorithm
            .as_ref()
            .map(|a| (a, "access_algorithm")),
        KeySetName::Action => settings
            .action_algorithm
            .as_ref()
            .map(|a| (a, "action_algorithm")),
        KeySetName::Webhook => None,
    };

    let algorithm = match (&own.algorithm, legacy_algorithm) {
        (Some(text), _) => parse_algorithm(text, own_field("algorithm"))?,
        (None, Some((text, field))) => parse_algorithm(text, field.to_owned())?,
        (None, None) => Sourced {
            value: default.algorithm,
            field: own_field("algorithm"),
        },
    };
    let rotate_every = duration(
        own.rotate_every_days
            .map(|days| (days, own_field("rotate_every_days"))),
        general(settings.rotate_every_days, "rotate_every_days"),
        SECONDS_PER_DAY,
        (default.rotate_every, own_field("rotate_every_days")),
    )?;
    let overlap = match own.overlap_days {
        Some(days) => duration_of(days, SECONDS_PER_DAY, own_field("overlap_days"))?,
        None => duration(
            None,
            general(settings.overlap_hours, "overlap_hours"),
            SECONDS_PER_HOUR,
            (default.overlap, own_field("overlap_days")),
        )?,
    };
    let prepublish = duration(
        own.prepublish_seconds
            .map(|seconds| (seconds, own_field("prepublish_seconds"))),
        general(settings.prepublish_seconds, "prepublish_seconds"),
        1,
        (default.prepublish, own_field("prepublish_seconds")),
    )?;
    let policy = KeySetPolicy {
        algorithm: algorithm.value,
        rotate_every: rotate_every.value,
        overlap: overlap.value,
        prepublish: prepublish.value,
        max_token_ttl: default.max_token_ttl,
    };
    let fields = PolicyFields {
        algorithm: algorithm.field,
        rotate_every: rotate_every.field,
        overlap: overlap.field,
        prepublish: prepublish.field,
    };
    Ok((policy, fields))
}

fn parse_algorithm(text: &str, field: String) -> Result<Sourced<Algorithm>, ConfigError> {
    match text.parse() {
        Ok(value) => Ok(Sourced { value, field }),
        Err(error) => Err(invalid(&field, error)),
    }
}

/// Returns the first of `own` and `general` converted with `unit_seconds`, or `default`.
fn duration(
    own: Option<(u64, String)>,
    general: Option<(u64, String)>,
    unit_seconds: u64,
    default: (Duration, String),
) -> Result<Sourced<Duration>, ConfigError> {
    match own.or(general) {
        Some((value, field)) => duration_of(value, unit_seconds, field),
        None => Ok(Sourced {
            value: default.0,
            field: default.1,
        }),
    }
}

/// Converts `value` units of `unit_seconds` into a duration that also fits in signed
/// milliseconds (the unit of `UnixMillis`), so a huge value is refused here rather than
/// wrapping into a tiny interval or saturating the schedule arithmetic.
fn duration_of(
    value: u64,
    unit_seconds: u64,
    field: String,
) -> Result<Sourced<Duration>, ConfigError> {
    let max_seconds = i64::MAX as u64 / 1000;
    match value.checked_mul(unit_seconds) {
        Some(seconds) if seconds <= max_seconds => Ok(Sourced {
            value: Duration::from_secs(seconds),
            field,
        }),
        _ => Err(invalid(
            &field,
            format!("{value} is too large (at most {} seconds)", max_seconds),
        )),
    }
}

/// Parses `--key-set-policy SET.FIELD=VALUE` items into tables, later items winning. The
/// value is read with the same serde declaration as the file's table, so the two forms
/// accept exactly the same fields and values.
fn parse_flags(items: &[String]) -> Result<BTreeMap<KeySetName, KeySetSettings>, ConfigError> {
    const FLAG: &str = "key_set_policy";
    let mut tables: BTreeMap<KeySetName, KeySetSettings> = BTreeMap::new();
    for item in items {
        let (path, value) = item
            .split_once('=')
            .ok_or_else(|| invalid(FLAG, format!("`{item}` is not SET.FIELD=VALUE")))?;
        let (set_name, field_name) = path
            .trim()
            .split_once('.')
            .ok_or_else(|| invalid(FLAG, format!("`{path}` is not SET.FIELD")))?;
        let key_set: KeySetName = set_name.parse().map_err(|error| invalid(FLAG, error))?;
        let field = format!("key_sets.{key_set}.{field_name}");
        let value = value.trim();
        // A number as is; anything else (an algorithm name) as a TOML string.
        let parsed = toml::from_str::<KeySetSettings>(&format!("{field_name} = {value}"))
            .or_else(|_| {
                let quoted = toml::Value::String(value.to_owned());
                toml::from_str::<KeySetSettings>(&format!("{field_name} = {quoted}"))
            })
            .map_err(|error| invalid(&field, error.message()))?;
        let table = tables.remove(&key_set).unwrap_or_default();
        tables.insert(key_set, parsed.over(table));
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(SECONDS_PER_DAY);
    const MAX_ACCESS_TTL: Duration = Duration::from_secs(900);

    fn resolve(settings: ServeArgs) -> Result<BTreeMap<KeySetName, KeySetPolicy>, ConfigError> {
        policies(&settings, MAX_ACCESS_TTL)
    }

    fn flags(items: &[&str]) -> ServeArgs {
        ServeArgs {
            key_set_policy: items.iter().map(|item| item.to_string()).collect(),
            ..ServeArgs::default()
        }
    }

    fn file(text: &str) -> ServeArgs {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_give_each_set_its_own_policy() {
        let policies = resolve(ServeArgs::default()).unwrap();
        let access = policies[&KeySetName::Access];
        assert_eq!((access.rotate_every, access.overlap), (90 * DAY, 7 * DAY));
        assert_eq!(access.algorithm, Algorithm::Rs256);
        let webhook = policies[&KeySetName::Webhook];
        assert_eq!((webhook.rotate_every, webhook.overlap), (30 * DAY, 3 * DAY));
        assert_eq!(webhook.algorithm, Algorithm::Hs256);
        assert_eq!(policies.len(), KeySetName::ALL.len());
    }

    #[test]
    fn file_table_and_flag_set_one_set_field_by_field() {
        let settings = flags(&["webhook.overlap_days=2", "access.algorithm=ES256"]).over(file(
            "[key_sets.webhook]\nrotate_every_days = 20\noverlap_days = 5\n\
             [key_sets.access]\nalgorithm = \"EdDSA\"\n",
        ));
        let policies = resolve(settings).unwrap();
        let webhook = policies[&KeySetName::Webhook];
        assert_eq!(webhook.rotate_every, 20 * DAY, "file value kept");
        assert_eq!(webhook.overlap, 2 * DAY, "flag wins over the file");
        assert_eq!(policies[&KeySetName::Access].algorithm, Algorithm::Es256);
        // The other sets keep their defaults.
        assert_eq!(policies[&KeySetName::Action].rotate_every, 90 * DAY);
    }

    #[test]
    fn older_general_flags_set_the_jws_sets_only_and_the_set_field_wins() {
        let settings = ServeArgs {
            rotate_every_days: Some(10),
            overlap_hours: Some(48),
            access_algorithm: Some("ES256".into()),
            key_set_policy: vec!["action.rotate_every_days=12".into()],
            ..ServeArgs::default()
        };
        let policies = resolve(settings).unwrap();
        let access = policies[&KeySetName::Access];
        assert_eq!(access.rotate_every, 10 * DAY);
        assert_eq!(access.overlap, 2 * DAY);
        assert_eq!(access.algorithm, Algorithm::Es256);
        assert_eq!(policies[&KeySetName::Action].rotate_every, 12 * DAY);
        let webhook = policies[&KeySetName::Webhook];
        assert_eq!((webhook.rotate_every, webhook.overlap), (30 * DAY, 3 * DAY));
    }

    #[test]
    fn errors_name_the_exact_field() {
        let cases: [(ServeArgs, &str); 8] = [
            (
                flags(&["webhook.overlap_days=0"]),
                "key_sets.webhook.overlap_days",
            ),
            (
                file("[key_sets.webhook]\nprepublish_seconds = 3000000"),
                "key_sets.webhook.prepublish_seconds",
            ),
            (
                flags(&["webhook.algorithm=RS256"]),
                "key_sets.webhook.algorithm",
            ),
            (
                flags(&["access.algorithm=HS256"]),
                "key_sets.access.algorithm",
            ),
            (
                flags(&["access.rotate_every_days=0"]),
                "key_sets.access.rotate_every_days",
            ),
            (
                flags(&["webhook.overlap_days=three"]),
                "key_sets.webhook.overlap_days",
            ),
            (flags(&["webhook.colour=blue"]), "key_sets.webhook.colour"),
            (flags(&["mailer.overlap_days=1"]), "key_set_policy"),
        ];
        for (settings, field) in cases {
            let error = resolve(settings).unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
        assert!(toml::from_str::<ServeArgs>("[key_sets.mailer]\noverlap_days = 1").is_err());
        assert!(toml::from_str::<ServeArgs>("[key_sets.webhook]\ncolour = 1").is_err());
    }

    #[test]
    fn huge_day_and_hour_values_are_errors_not_wrapped_durations() {
        for (settings, field) in [
            (
                flags(&[&format!("webhook.rotate_every_days={}", u64::MAX)]),
                "key_sets.webhook.rotate_every_days",
            ),
            // Fits in u64 seconds, not in i64 milliseconds.
            (
                flags(&["access.overlap_days=200000000000"]),
                "key_sets.access.overlap_days",
            ),
            (
                ServeArgs {
                    overlap_hours: Some(u64::MAX / 3600 + 1),
                    ..ServeArgs::default()
                },
                "overlap_hours",
            ),
            (
                ServeArgs {
                    rotate_every_days: Some(u64::MAX),
                    ..ServeArgs::default()
                },
                "rotate_every_days",
            ),
        ] {
            let error = resolve(settings).unwrap_err();
            assert_eq!(error.field, field, "{error}");
            assert!(error.message.contains("too large"), "{error}");
        }
        // The largest accepted value still converts without loss.
        let max_days = i64::MAX as u64 / 1000 / SECONDS_PER_DAY;
        let policies = resolve(flags(&[&format!("webhook.rotate_every_days={max_days}")])).unwrap();
        assert_eq!(
            policies[&KeySetName::Webhook].rotate_every.as_secs(),
            max_days * SECONDS_PER_DAY
        );
    }
}
