//! The certificate report of `plumb certs status`: a table for people, or the `plumb.certs/v1`
//! JSON document, and the exit code that sums it up. Pure: statuses in, text out.

use crate::kinds::certificate::{CertificateHealth, CertificateStatus};
use crate::text::{escape, escape_block};
use serde::Serialize;
use std::fmt::Write as _;

/// The JSON schema name.
pub const SCHEMA: &str = "plumb.certs/v1";

/// Every certificate of the hosts read, and the hosts that could not be read.
#[derive(Debug, Serialize)]
pub struct CertsReport {
    /// `plumb.certs/v1`.
    pub schema: &'static str,
    /// When the hosts were read, seconds since the epoch.
    pub checked_at: i64,
    /// Per host and certificate, in inventory and apply order.
    pub certificates: Vec<CertificateStatus>,
    /// Hosts that could not be read, with why.
    pub failed: Vec<HostFailure>,
}

/// A host that could not be read.
#[derive(Debug, Serialize)]
pub struct HostFailure {
    /// Host name.
    pub host: String,
    /// Why.
    pub error: String,
}

impl CertsReport {
    /// 1 when a host could not be read, 2 when a converge would (re)issue a certificate,
    /// 0 when every certificate is in order: the same meaning as a dry run's exit code.
    pub fn exit_code(&self) -> i32 {
        if !self.failed.is_empty() {
            1
        } else if self
            .certificates
            .iter()
            .any(|c| c.health != CertificateHealth::Ok)
        {
            2
        } else {
            0
        }
    }

    /// The JSON document.
    pub fn to_json(&self) -> String {
        let text = serde_json::to_string_pretty(self).unwrap_or_default() + "\n";
        crate::secrets::redact(&text)
    }

    /// A table, one certificate per line, then the hosts that failed.
    pub fn to_human(&self, colour: bool) -> String {
        let paint = |code: &str, s: &str| {
            if colour {
                format!("\x1b[{code}m{s}\x1b[0m")
            } else {
                s.to_string()
            }
        };
        let rows: Vec<[String; 6]> = self
            .certificates
            .iter()
            .map(|c| {
                // Host names, paths and reasons come from the repo and the hosts: escaped.
                [
                    escape(&c.host).into_owned(),
                    escape(&c.path).into_owned(),
                    escape(&c.ca).into_owned(),
                    c.not_after.map(format_time).unwrap_or_else(|| "-".into()),
                    c.days_left
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "-".into()),
                    match (c.health, &c.reason) {
                        (CertificateHealth::Ok, _) => "ok".to_string(),
                        (CertificateHealth::Missing, _) => "missing".to_string(),
                        (CertificateHealth::Reissue, Some(r)) => format!("reissue: {}", escape(r)),
                        (CertificateHealth::Reissue, None) => "reissue".to_string(),
                    },
                ]
            })
            .collect();
        let header = [
            "HOST",
            "CERTIFICATE",
            "CA",
            "EXPIRES (UTC)",
            "DAYS",
            "STATE",
        ];
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String; 6], state: String| {
            for (i, cell) in cells.iter().take(5).enumerate() {
                let _ = write!(out, "{cell:<w$}  ", w = widths[i]);
            }
            let _ = writeln!(out, "{state}");
        };
        line(&mut out, &header.map(String::from), header[5].to_string());
        for (r, c) in rows.iter().zip(&self.certificates) {
            let state = match c.health {
                CertificateHealth::Ok => paint("32", &r[5]),
                _ => paint("33", &r[5]),
            };
            line(&mut out, r, state);
        }
        for f in &self.failed {
            let _ = writeln!(
                out,
                "{} {}: {}",
                paint("1", &escape(&f.host)),
                paint("31;1", "FAILED"),
                escape_block(&crate::secrets::redact(&f.error), "  ")
            );
        }
        let renew = self
            .certificates
            .iter()
            .filter(|c| c.health != CertificateHealth::Ok)
            .count();
        let _ = writeln!(
            out,
            "\n{} certificates: {} in order, {renew} to (re)issue by the next converge; {} hosts failed",
            self.certificates.len(),
            self.certificates.len() - renew,
            self.failed.len()
        );
        out
    }
}

/// `YYYY-MM-DD HH:MM` in UTC.
fn format_time(secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => secs.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(host: &str, health: CertificateHealth, days: Option<i64>) -> CertificateStatus {
        CertificateStatus {
            host: host.into(),
            name: "c".into(),
            path: format!("/etc/{host}.crt"),
            ca: "pg-ca".into(),
            health,
            reason: (health == CertificateHealth::Reissue).then(|| "expires in 2 days".into()),
            common_name: None,
            serial: None,
            not_after: days.map(|d| 1_800_000_000 + d * 86_400),
            days_left: days,
            renew_before: "30d".into(),
        }
    }

    #[test]
    fn the_table_and_the_exit_code_sum_up_every_certificate() {
        let mut r = CertsReport {
            schema: SCHEMA,
            checked_at: 1_800_000_000,
            certificates: vec![
                status("pg1", CertificateHealth::Ok, Some(300)),
                status("pg2", CertificateHealth::Reissue, Some(2)),
            ],
            failed: vec![],
        };
        assert_eq!(r.exit_code(), 2);
        let text = r.to_human(false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("HOST"), "{text}");
        assert!(
            lines[1].starts_with("pg1 ") && lines[1].ends_with("  300   ok"),
            "{text}"
        );
        assert!(lines[1].contains("2027-11-11 08:00"), "{text}");
        assert!(
            lines[2].ends_with("  2     reissue: expires in 2 days"),
            "{text}"
        );
        assert!(
            text.contains("2 certificates: 1 in order, 1 to (re)issue"),
            "{text}"
        );
        // Names, paths and errors from hosts are escaped.
        let mut hostile = status("pg1\x1b[2K\rpg9", CertificateHealth::Reissue, Some(2));
        hostile.reason = Some("expired\nfake line".into());
        let forged = CertsReport {
            schema: SCHEMA,
            checked_at: 0,
            certificates: vec![hostile],
            failed: vec![HostFailure {
                host: "pg3\x1b]0;t\x07".into(),
                error: "refused\r\nok line\x1b[0m".into(),
            }],
        };
        let text = forged.to_human(false);
        assert!(
            !text.contains('\x1b') && !text.contains('\r') && !text.contains('\x07'),
            "{text:?}"
        );
        assert!(text.contains("pg1\\e[2K\\rpg9"), "{text}");
        assert!(text.contains("reissue: expired\\nfake line"), "{text}");
        assert!(
            text.contains("pg3\\e]0;t\\x07 FAILED: refused\\r\n  ok line\\e[0m"),
            "{text}"
        );
        r.certificates.remove(1);
        assert_eq!(r.exit_code(), 0);
        r.failed.push(HostFailure {
            host: "pg3".into(),
            error: "connection refused".into(),
        });
        assert_eq!(r.exit_code(), 1);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["schema"], "plumb.certs/v1");
        assert_eq!(v["certificates"][0]["health"], "ok");
        assert_eq!(v["certificates"][0]["days_left"], 300);
        assert_eq!(v["failed"][0]["host"], "pg3");
    }
}
