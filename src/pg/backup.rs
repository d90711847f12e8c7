//! What a pgBackRest repository holds for a stanza, read from `pgbackrest info --output=json`
//! (strictly: the repository host's output is hostile input like any other), and the verdicts
//! plumb draws from it: is there a valid backup to restore from, what is the newest backup of
//! each type, is one older than its schedule allows. Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// pgBackRest's backup types, smallest base first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    /// A full copy of the cluster.
    Full,
    /// Changes since the last full backup.
    Diff,
    /// Changes since the last backup of any type.
    Incr,
}

impl BackupType {
    /// Every type, in the order the backup units must not overlap.
    pub const ALL: [BackupType; 3] = [BackupType::Full, BackupType::Diff, BackupType::Incr];

    /// pgBackRest's name of the type (`--type=`).
    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Diff => "diff",
            BackupType::Incr => "incr",
        }
    }

    /// Reads `full`, `diff` or `incr`.
    pub fn parse(s: &str) -> Option<BackupType> {
        BackupType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether a backup of this type also serves as a newer base for `other` (a full backup is
    /// as good as a differential or an incremental one taken at the same time).
    fn covers(self, other: BackupType) -> bool {
        self <= other
    }
}

impl fmt::Display for BackupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One backup of a stanza.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// pgBackRest's label, e.g. `20261203-101500F`.
    pub label: String,
    /// Type.
    #[serde(rename = "type")]
    pub kind: BackupType,
    /// When it started and ended (Unix seconds).
    pub start: i64,
    /// When it ended (Unix seconds): what a point-in-time restore can reach at the earliest.
    pub stop: i64,
    /// The backup was taken with errors (a page checksum failure, say).
    pub error: bool,
}

/// What the repository holds for one stanza.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StanzaInfo {
    /// Stanza name (the cluster's name).
    pub name: String,
    /// pgBackRest's status code: 0 ok, 1 missing stanza path, 2 no valid backups, 3 missing
    /// stanza data, 4 different cipher, 5 database mismatch, 6 backup/expire running, 99 other.
    pub status_code: i64,
    /// pgBackRest's status message.
    pub status_message: String,
    /// Backups, oldest first.
    pub backups: Vec<Backup>,
}

/// The answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected output of `pgbackrest info --output=json`: {0}")]
pub struct InfoError(String);

#[derive(Deserialize)]
struct RawStanza {
    name: String,
    status: RawStatus,
    #[serde(default)]
    backup: Vec<RawBackup>,
}

#[derive(Deserialize)]
struct RawStatus {
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct RawBackup {
    label: String,
    #[serde(rename = "type")]
    kind: String,
    timestamp: RawTimestamp,
    #[serde(default)]
    error: Option<bool>,
}

#[derive(Deserialize)]
struct RawTimestamp {
    start: i64,
    stop: i64,
}

/// Largest answer read (a stanza with years of backups is a few hundred kB).
const MAX_INFO: usize = 8 * 1024 * 1024;

/// Reads `pgbackrest info --output=json`.
pub fn parse_info(json: &[u8]) -> Result<Vec<StanzaInfo>, InfoError> {
    if json.len() > MAX_INFO {
        return Err(InfoError(format!(
            "{} bytes, more than allowed",
            json.len()
        )));
    }
    let raw: Vec<RawStanza> = serde_json::from_slice(json).map_err(|e| InfoError(e.to_string()))?;
    raw.into_iter()
        .map(|s| {
            let mut backups = s
                .backup
                .into_iter()
                .map(|b| {
                    let kind = BackupType::parse(&b.kind).ok_or_else(|| {
                        InfoError(format!(
                            "backup {:?} has unknown type {:?}",
                            printable(&b.label),
                            printable(&b.kind)
                        ))
                    })?;
                    Ok(Backup {
                        label: printable(&b.label),
                        kind,
                        start: b.timestamp.start,
                        stop: b.timestamp.stop,
                        error: b.error.unwrap_or(false),
                    })
                })
                .collect::<Result<Vec<_>, InfoError>>()?;
            backups.sort_by_key(|b| b.stop);
            Ok(StanzaInfo {
                name: printable(&s.name),
                status_code: s.status.code,
                status_message: printable(&s.status.message),
                backups,
            })
        })
        .collect()
}

/// Text from the repository host with control characters replaced (it reaches terminals).
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(200)
        .collect()
}

impl StanzaInfo {
    /// The stanza of `name` in an info answer.
    pub fn find(all: Vec<StanzaInfo>, name: &str) -> Option<StanzaInfo> {
        all.into_iter().find(|s| s.name == name)
    }

    /// Backups a restore can start from (taken without error), newest last.
    pub fn valid(&self) -> impl Iterator<Item = &Backup> {
        self.backups.iter().filter(|b| !b.error)
    }

    /// Whether the repository holds a backup to restore from.
    pub fn has_valid_backup(&self) -> bool {
        self.valid().next().is_some()
    }

    /// The newest valid backup of each type.
    pub fn newest(&self) -> BTreeMap<BackupType, &Backup> {
        let mut out = BTreeMap::new();
        for b in self.valid() {
            out.insert(b.kind, b);
        }
        out
    }

    /// The backup labelled `label`, if the repository holds it and it is valid.
    pub fn backup(&self, label: &str) -> Option<&Backup> {
        self.valid().find(|b| b.label == label)
    }

    /// The stanza's state for a report at `now` (Unix seconds), with a warning for every
    /// scheduled type whose newest backup (or a newer one of a larger type) is older than its
    /// schedule allows.
    pub fn summary(&self, now: i64, schedules: &[(BackupType, String)]) -> BackupSummary {
        let newest = self
            .newest()
            .into_iter()
            .map(|(kind, b)| NewestBackup {
                kind,
                label: b.label.clone(),
                stop: b.stop,
                age_secs: (now - b.stop).max(0),
            })
            .collect::<Vec<_>>();
        let mut warnings = Vec::new();
        if !self.has_valid_backup() {
            warnings.push(format!(
                "stanza {} has no valid backup ({})",
                self.name, self.status_message
            ));
        }
        for (kind, schedule) in schedules {
            let Some(period) = schedule_period(schedule) else {
                continue;
            };
            let allowed = period + (period / 2).max(15 * 60);
            let latest = self
                .valid()
                .filter(|b| b.kind.covers(*kind))
                .map(|b| b.stop)
                .max();
            if let Some(stop) = latest
                && now - stop > allowed
            {
                warnings.push(format!(
                    "the newest {kind} backup of stanza {} is {} old, its schedule is {schedule}",
                    self.name,
                    age(now - stop)
                ));
            }
        }
        BackupSummary {
            stanza: self.name.clone(),
            status: self.status_message.clone(),
            newest,
            warnings,
        }
    }
}

/// The newest backup of one type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewestBackup {
    /// Type.
    #[serde(rename = "type")]
    pub kind: BackupType,
    /// Label.
    pub label: String,
    /// When it ended (Unix seconds).
    pub stop: i64,
    /// How old it was when read.
    pub age_secs: i64,
}

/// A stanza's backups as a report shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    /// Stanza.
    pub stanza: String,
    /// pgBackRest's status message (`ok`, `no valid backups`...).
    pub status: String,
    /// Newest valid backup of each type that has one.
    pub newest: Vec<NewestBackup>,
    /// What is wrong (no backup, one older than its schedule allows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl fmt::Display for BackupSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.newest.is_empty() {
            return write!(f, "no backup ({})", self.status);
        }
        let parts: Vec<String> = self
            .newest
            .iter()
            .map(|b| format!("{} {} ({} ago)", b.kind, b.label, age(b.age_secs)))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

/// The period of a systemd calendar shorthand plumb recognises (`hourly`, `daily`, `weekly`,
/// `monthly`), in seconds; `None` for other expressions (no staleness check for them).
pub fn schedule_period(schedule: &str) -> Option<i64> {
    match schedule.trim() {
        "minutely" => Some(60),
        "hourly" => Some(3600),
        "daily" => Some(86_400),
        "weekly" => Some(7 * 86_400),
        "monthly" => Some(31 * 86_400),
        _ => None,
    }
}

/// `3d 4h`, `2h 5m`, `40s`.
pub fn age(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// Where a whole-cluster restore goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreTarget {
    /// The newest backup, then every archived WAL segment: as close to the loss as the
    /// repository allows.
    Latest,
    /// A point in time (Unix seconds), reached from the newest backup that ended before it.
    Time(i64),
    /// One backup, consistent at its end, without replaying later WAL.
    Backup(String),
}

impl RestoreTarget {
    /// Reads an RFC 3339 time (`2025-12-03T10:30:00Z`, `2026-12-03 10:30:00+01:00`).
    pub fn parse_time(text: &str) -> Result<RestoreTarget, String> {
        use time::format_description::well_known::Rfc3339;
        let normal = text.trim().replacen(' ', "T", 1);
        time::OffsetDateTime::parse(&normal, &Rfc3339)
            .map(|t| RestoreTarget::Time(t.unix_timestamp()))
            .map_err(|_| {
                format!(
                    "`{}` is not a time with its offset, e.g. 2025-12-03T10:30:00Z",
                    printable(text)
                )
            })
    }

    /// Checks the target against what the repository holds, before anything is touched: a
    /// restore needs a valid backup, a named backup must exist, a point in time must come
    /// after the end of a valid backup (and not after now). Returns the backup the restore
    /// starts from.
    pub fn check<'i>(&self, info: &'i StanzaInfo, now: i64) -> Result<&'i Backup, String> {
        let Some(newest) = info.valid().last() else {
            return Err(format!(
                "the repository holds no valid backup of {} ({}): there is nothing to restore \
                 from; nothing was touched",
                info.name, info.status_message
            ));
        };
        match self {
            RestoreTarget::Latest => Ok(newest),
            RestoreTarget::Backup(label) => info.backup(label).ok_or_else(|| {
                let known: Vec<&str> = info.valid().map(|b| b.label.as_str()).collect();
                format!(
                    "the repository holds no valid backup {} of {} (it holds: {})",
                    printable(label),
                    info.name,
                    known.join(", ")
                )
            }),
            RestoreTarget::Time(t) => {
                if *t > now {
                    return Err("the target time is in the future".to_string());
                }
                info.valid().filter(|b| b.stop <= *t).last().ok_or_else(|| {
                    format!(
                        "no valid backup of {} ended before the target time; the oldest \
                             ended at {} (Unix time)",
                        info.name,
                        info.valid().next().map(|b| b.stop).unwrap_or(0)
                    )
                })
            }
        }
    }

    /// `pgbackrest restore` options for this target (the stanza and configuration aside).
    pub fn pgbackrest_args(&self) -> Vec<String> {
        match self {
            RestoreTarget::Latest => vec!["--type=default".into()],
            RestoreTarget::Time(t) => vec![
                "--type=time".into(),
                format!("--target={}", utc_text(*t)),
                "--target-action=promote".into(),
            ],
            RestoreTarget::Backup(label) => vec![
                format!("--set={label}"),
                "--type=immediate".into(),
                "--target-action=promote".into(),
            ],
        }
    }
}

/// `2026-12-03 10:30:00+00`, the form pgBackRest's `--target` reads.
fn utc_text(t: i64) -> String {
    let at =
        time::OffsetDateTime::from_unix_timestamp(t).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}+00",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

impl fmt::Display for RestoreTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreTarget::Latest => f.write_str("the newest backup and every archived WAL"),
            RestoreTarget::Time(t) => write!(f, "the state at {}", utc_text(*t)),
            RestoreTarget::Backup(l) => write!(f, "backup {} as it ended", printable(l)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pgbackrest info --output=json` of pgBackRest 2.45 with a full and an incremental backup
    /// (abridged of the fields plumb does not read).
    const INFO: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1",
      "max":"000000010000000000000007","min":"000000010000000000000003"}],
      "backup":[
        {"archive":{"start":"000000010000000000000003","stop":"000000010000000000000003"},
         "backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},"error":false,
         "info":{"delta":31336453,"repository":{"delta":4057717,"size":4057717},"size":31336453},
         "label":"20261203-100000F","lsn":{"start":"0/3000028","stop":"0/3000100"},
         "prior":null,"reference":null,"timestamp":{"start":1764756000,"stop":1764756010},
         "type":"full"},
        {"archive":{"start":"000000010000000000000005","stop":"000000010000000000000005"},
         "backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},"error":false,
         "info":{"delta":8192,"repository":{"delta":512,"size":4057717},"size":31336453},
         "label":"20261203-100000F_20261203-110000I","lsn":{"start":"0/5000028","stop":"0/5000100"},
         "prior":"20261203-100000F","reference":["20261203-100000F"],
         "timestamp":{"start":1764759600,"stop":1764759605},"type":"incr"}],
      "cipher":"none","db":[{"id":1,"repo-key":1,"system-id":7300000000000000000,"version":"15"}],
      "name":"postgres01","repo":[{"cipher":"none","key":1,"status":{"code":0,"message":"ok"}}],
      "status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]"#;

    /// A stanza just created: no backup yet.
    const EMPTY: &str = r#"[{"archive":[],"backup":[],"cipher":"none","db":[],"name":"postgres01",
      "repo":[{"cipher":"none","key":1,"status":{"code":2,"message":"no valid backups"}}],
      "status":{"code":2,"lock":{"backup":{"held":false}},"message":"no valid backups"}}]"#;

    #[test]
    fn an_info_answer_is_read() {
        let info = StanzaInfo::find(parse_info(INFO.as_bytes()).unwrap(), "postgres01").unwrap();
        assert_eq!(info.status_code, 0);
        assert!(info.has_valid_backup());
        let newest = info.newest();
        assert_eq!(newest[&BackupType::Full].label, "20261203-100000F");
        assert_eq!(
            newest[&BackupType::Incr].label,
            "20261203-100000F_20261203-110000I"
        );
        assert!(!newest.contains_key(&BackupType::Diff));
        assert!(info.backup("20261203-100000F").is_some());
        assert!(info.backup("20261203-090000F").is_none());

        let empty = StanzaInfo::find(parse_info(EMPTY.as_bytes()).unwrap(), "postgres01").unwrap();
        assert_eq!(empty.status_code, 2);
        assert!(!empty.has_valid_backup());
        let s = empty.summary(1764759605, &[]);
        assert_eq!(s.to_string(), "no backup (no valid backups)");
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
    }

    #[test]
    fn hostile_or_broken_answers_are_errors_or_made_printable() {
        assert!(parse_info(b"not json").is_err());
        assert!(parse_info(br#"{"name":"x"}"#).is_err());
        let odd = INFO.replace(r#""type":"incr""#, r#""type":"snapshot""#);
        assert!(parse_info(odd.as_bytes()).is_err());
        let escape = INFO.replace(r#""name":"postgres01""#, r#""name":"postgres01\u001b[2J""#);
        let info = parse_info(escape.as_bytes()).unwrap();
        assert_eq!(info[0].name, "postgres01?[2J");
    }

    #[test]
    fn a_backup_with_errors_is_no_base_for_a_restore() {
        let broken = EMPTY.replace(
            r#""backup":[]"#,
            r#""backup":[{"label":"20261203-100000F","type":"full","error":true,
              "timestamp":{"start":1,"stop":2}}]"#,
        );
        let info = parse_info(broken.as_bytes()).unwrap().remove(0);
        assert!(!info.has_valid_backup());
        assert!(info.newest().is_empty());
    }

    #[test]
    fn a_backup_older_than_its_schedule_allows_is_a_warning() {
        let info = parse_info(INFO.as_bytes()).unwrap().remove(0);
        let incr_stop = 1764759605;
        let schedules = [
            (BackupType::Full, "weekly".to_string()),
            (BackupType::Incr, "hourly".to_string()),
        ];
        // 50 minutes after the incremental backup: in time.
        let s = info.summary(incr_stop + 50 * 60, &schedules);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(s.newest.len(), 2);
        // Two hours after: the hourly incremental is late, the weekly full is not.
        let s = info.summary(incr_stop + 2 * 3600, &schedules);
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(
            s.warnings[0].contains("newest incr backup") && s.warnings[0].contains("2h 0m old"),
            "{:?}",
            s.warnings
        );
        // A calendar expression plumb does not read is not checked.
        let s = info.summary(
            incr_stop + 30 * 86_400,
            &[(BackupType::Incr, "*-*-* 03:00".to_string())],
        );
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert!(s.to_string().contains("full 20261203-100000F ("), "{s}");
    }

    #[test]
    fn restore_targets_are_checked_before_anything_is_touched() {
        let info = parse_info(INFO.as_bytes()).unwrap().remove(0);
        let empty = parse_info(EMPTY.as_bytes()).unwrap().remove(0);
        let now = 1764763200;
        let e = RestoreTarget::Latest.check(&empty, now).unwrap_err();
        assert!(
            e.contains("no valid backup") && e.contains("nothing was touched"),
            "{e}"
        );
        assert_eq!(
            RestoreTarget::Latest.check(&info, now).unwrap().label,
            "20261203-100000F_20261203-110000I"
        );
        let b = RestoreTarget::Backup("20261203-100000F".into());
        assert_eq!(b.check(&info, now).unwrap().kind, BackupType::Full);
        assert_eq!(
            b.pgbackrest_args(),
            [
                "--set=20261203-100000F",
                "--type=immediate",
                "--target-action=promote"
            ]
        );
        let e = RestoreTarget::Backup("nope".into())
            .check(&info, now)
            .unwrap_err();
        assert!(e.contains("20261203-100000F"), "{e}");

        // 10:30 UTC: after the full backup (10:00:10), before the incremental one (11:00).
        let t = RestoreTarget::parse_time("2025-12-03T10:30:00Z").unwrap();
        assert_eq!(t.check(&info, now).unwrap().label, "20261203-100000F");
        assert_eq!(
            t.pgbackrest_args(),
            [
                "--type=time",
                "--target=2025-12-03 10:30:00+00",
                "--target-action=promote"
            ]
        );
        // The same instant written with an offset and a space.
        assert_eq!(
            RestoreTarget::parse_time("2025-12-03 11:30:00+01:00").unwrap(),
            t
        );
        // Before the first backup ended, and in the future.
        let early = RestoreTarget::parse_time("2025-12-03T09:00:00Z").unwrap();
        assert!(
            early
                .check(&info, now)
                .unwrap_err()
                .contains("no valid backup")
        );
        let late = RestoreTarget::parse_time("2027-01-01T00:00:00Z").unwrap();
        assert!(late.check(&info, now).unwrap_err().contains("future"));
        assert!(RestoreTarget::parse_time("yesterday").is_err());
        assert!(
            RestoreTarget::parse_time("2025-12-03 10:30:00").is_err(),
            "an offset is required"
        );
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(age(40), "40s");
        assert_eq!(age(300), "5m");
        assert_eq!(age(7500), "2h 5m");
        assert_eq!(age(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
        assert_eq!(age(-5), "0s");
    }
}
