//! Notifications of `plumb pull` and `plumb serve`: when a run fails, when a new commit failed
//! its gates and was rolled back (`rolled_back`, a failure too), when a run succeeds after
//! a failure (recovery) and, if asked, when a run changes hosts, a JSON summary is POSTed to
//! each configured URL and/or given on stdin to each configured command.
//!
//! - URLs are `http://HOST[:PORT]/PATH` (plain HTTP: a local relay, or a chat tool's endpoint
//!   behind a proxy; for HTTPS give a command such as `curl`). Each POST has a deadline
//!   ([`HTTP_TIMEOUT`]) and is tried at most [`ATTEMPTS`] times; only a 2xx answer counts.
//! - Commands run directly, never through a shell, with no arguments: the summary is on stdin,
//!   nothing from the run reaches their command line or environment but the fixed event word
//!   (`PLUMB_NOTIFY_EVENT`). Each is killed past [`COMMAND_TIMEOUT`].
//!
//! The summary holds what the history holds (commit, summary, hosts, the redacted error) and a
//! `text` line that chat tools show as is; never a secret. A failed notification is logged and
//! never fails the run.

use serde::Serialize;
use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Deadline of one HTTP attempt (connect, send, read the status line).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP attempts per URL.
pub const ATTEMPTS: u32 = 3;
/// How long a notification command may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Where notifications go.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    /// `http://` URLs to POST the summary to.
    pub urls: Vec<HttpUrl>,
    /// Programs to run with the summary on stdin.
    pub commands: Vec<PathBuf>,
    /// Also notify runs that changed hosts.
    pub on_change: bool,
}

/// Why a notification target is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotifyError {
    /// Not an `http://` URL plumb can POST to.
    #[error(
        "--notify-url {0}: only http://HOST[:PORT]/PATH is supported (for https, use --notify-command with curl)"
    )]
    Url(String),
}

/// A parsed `http://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    host: String,
    port: u16,
    path: String,
}

impl HttpUrl {
    /// Parses `http://HOST[:PORT][/PATH]` strictly: no user info, no fragment, no control or
    /// space characters.
    pub fn parse(url: &str) -> Result<HttpUrl, NotifyError> {
        let bad = || NotifyError::Url(crate::text::escape(url).into_owned());
        if url.len() > 2048 || url.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad());
        }
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') || path.contains('#') {
            return Err(bad());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                if h.contains(':') && !h.starts_with('[') {
                    return Err(bad());
                }
                (h, p.parse::<u16>().map_err(|_| bad())?)
            }
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
        {
            return Err(bad());
        }
        Ok(HttpUrl {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// The URL, for logs.
    pub fn display(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            format!("http://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// What happened, as notified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A run failed.
    Failed,
    /// A run of a new commit failed its gates: the commit was marked bad and the last good
    /// commit re-applied (still a failure).
    RolledBack,
    /// A run succeeded after a failed one.
    Recovered,
    /// A run changed hosts (only with `on_change`).
    Changed,
}

impl Event {
    /// The word, for `PLUMB_NOTIFY_EVENT`.
    pub fn word(self) -> &'static str {
        match self {
            Event::Failed => "failed",
            Event::RolledBack => "rolled_back",
            Event::Recovered => "recovered",
            Event::Changed => "changed",
        }
    }
}

/// The JSON body of a notification.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// `failed`, `rolled_back`, `recovered` or `changed`.
    pub event: Event,
    /// One line for people (chat tools show it as is).
    pub text: String,
    /// The repo (credentials masked) and branch.
    pub source: String,
    /// The branch.
    pub branch: String,
    /// The run id in the history, if recorded.
    pub run_id: Option<String>,
    /// The commit, if fetched.
    pub commit: Option<String>,
    /// Its summary line.
    pub summary: Option<String>,
    /// What started the run.
    pub trigger: String,
    /// `changed`, `unchanged`, `drift`, `failed`.
    pub result: String,
    /// Hosts changed.
    pub changed_hosts: Vec<String>,
    /// Hosts failed.
    pub failed_hosts: Vec<String>,
    /// The error that stopped the run (redacted).
    pub error: Option<String>,
    /// The last good commit re-applied after this run failed its gates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back_to: Option<String>,
}

/// Which event a run makes, if any: `failed` now; `recovered` when it succeeded and the run
/// before failed; `changed` when asked for.
pub fn event_for(
    failed: bool,
    previous_failed: bool,
    changed: bool,
    on_change: bool,
) -> Option<Event> {
    if failed {
        Some(Event::Failed)
    } else if previous_failed {
        Some(Event::Recovered)
    } else if changed && on_change {
        Some(Event::Changed)
    } else {
        None
    }
}

impl Notifier {
    /// True when nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty() && self.commands.is_empty()
    }

    /// Sends `summary` everywhere configured; returns how many targets took it.
    pub fn send(&self, summary: &Summary) -> usize {
        let body = crate::secrets::redact(&serde_json::to_string(summary).unwrap_or_default());
        let mut ok = 0;
        for url in &self.urls {
            match post_with_retries(url, body.as_bytes()) {
                Ok(()) => ok += 1,
                Err(e) => {
                    tracing::warn!(url = %url.display(), error = %e, "notification not delivered")
                }
            }
        }
        for cmd in &self.commands {
            match run_command(cmd, summary.event, body.as_bytes()) {
                Ok(()) => ok += 1,
                Err(e) => {
                    tracing::warn!(command = %cmd.display(), error = %e, "notification command failed")
                }
            }
        }
        ok
    }
}

fn post_with_retries(url: &HttpUrl, body: &[u8]) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(u64::from(attempt)));
        }
        match post(url, body) {
            Ok(status) if (200..300).contains(&status) => return Ok(()),
            Ok(status) => last = format!("answered {status}"),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("{last} (after {ATTEMPTS} attempts)"))
}

/// One POST; the status code of the answer.
fn post(url: &HttpUrl, body: &[u8]) -> std::io::Result<u16> {
    let deadline = Instant::now() + HTTP_TIMEOUT;
    let addrs: Vec<_> = (url.host.as_str(), url.port).to_socket_addrs()?.collect();
    let mut stream = None;
    let mut err = std::io::Error::other("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, HTTP_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => err = e,
        }
    }
    let mut s = stream.ok_or(err)?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    s.set_write_timeout(Some(left()))?;
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    write!(
        s,
        "POST {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: plumb\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.port,
        body.len()
    )?;
    s.write_all(body)?;
    // The status line, within the deadline and 1 KiB.
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 1024 {
        s.set_read_timeout(Some(left()))?;
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}

fn run_command(cmd: &std::path::Path, event: Event, body: &[u8]) -> Result<(), String> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(cmd)
        .env("PLUMB_NOTIFY_EVENT", event.word())
        .env_remove("PLUMB_WEBHOOK_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin is fine.
        let _ = stdin.write_all(body);
    }
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => return Err(format!("exited with {status}")),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("killed after {}s", COMMAND_TIMEOUT.as_secs()));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn summary(event: Event) -> Summary {
        Summary {
            event,
            text: "plumb: run failed on db1".into(),
            source: "https://git.example.invalid/ops/cluster.git".into(),
            branch: "main".into(),
            run_id: Some("20261203T093932Z-00abcd".into()),
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            summary: Some("db: raise max_connections".into()),
            trigger: "webhook".into(),
            result: "failed".into(),
            changed_hosts: vec![],
            failed_hosts: vec!["db1".into()],
            error: None,
            rolled_back_to: None,
        }
    }

    /// A loopback HTTP server that answers `statuses` in turn and hands back each body.
    fn listener(statuses: Vec<u16>) -> (HttpUrl, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            for status in statuses {
                let (mut s, _) = l.accept().unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = s.read(&mut buf).unwrap();
                    raw.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&raw).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .unwrap()
                            .parse()
                            .unwrap();
                        if body.len() >= len {
                            assert!(head.starts_with("POST /hook/path HTTP/1.1\r\n"), "{head}");
                            bodies.push(body.to_string());
                            break;
                        }
                    }
                    assert!(n > 0, "closed early");
                }
                write!(s, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").unwrap();
            }
            bodies
        });
        (
            HttpUrl::parse(&format!("http://127.0.0.1:{port}/hook/path")).unwrap(),
            h,
        )
    }

    #[test]
    fn a_failure_is_posted_as_json_with_a_text_and_retried_on_5xx() {
        let (url, server) = listener(vec![503, 200]);
        let n = Notifier {
            urls: vec![url],
            ..Default::default()
        };
        assert_eq!(n.send(&summary(Event::Failed)), 1);
        let bodies = server.join().unwrap();
        assert_eq!(bodies.len(), 2, "one retry after the 503");
        let v: serde_json::Value = serde_json::from_str(&bodies[1]).unwrap();
        assert_eq!(v["event"], "failed");
        assert_eq!(v["text"], "plumb: run failed on db1");
        assert_eq!(v["failed_hosts"][0], "db1");
    }

    #[test]
    fn retries_are_bounded() {
        let (url, server) = listener(vec![500, 500, 500]);
        let n = Notifier {
            urls: vec![url],
            ..Default::default()
        };
        assert_eq!(n.send(&summary(Event::Failed)), 0);
        assert_eq!(server.join().unwrap().len(), 3);
    }

    #[test]
    fn a_command_gets_the_summary_on_stdin_and_no_shell() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got");
        let script = dir.path().join("notify.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$PLUMB_NOTIFY_EVENT\" > '{}'\ncat >> '{}'\n",
                out.display(),
                out.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
        let n = Notifier {
            commands: vec![script],
            ..Default::default()
        };
        let mut s = summary(Event::Recovered);
        // A hostile summary stays data: it is stdin, never a command line.
        s.summary = Some("$(touch /tmp/pwned-by-plumb-test); `id`".into());
        assert_eq!(n.send(&s), 1);
        let got = std::fs::read_to_string(&out).unwrap();
        let (event, json) = got.split_once('\n').unwrap();
        assert_eq!(event, "recovered");
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        assert_eq!(v["summary"], "$(touch /tmp/pwned-by-plumb-test); `id`");
        assert!(!std::path::Path::new("/tmp/pwned-by-plumb-test").exists());
        // A failing command is reported, not fatal.
        let n = Notifier {
            commands: vec![PathBuf::from("/bin/false")],
            ..Default::default()
        };
        assert_eq!(n.send(&s), 0);
    }

    #[test]
    fn urls_are_parsed_strictly_and_events_chosen() {
        let u = HttpUrl::parse("http://relay.local:8080/x?y=1").unwrap();
        assert_eq!(u.display(), "http://relay.local:8080/x?y=1");
        assert_eq!(
            HttpUrl::parse("http://h").unwrap().display(),
            "http://h:80/"
        );
        assert_eq!(
            HttpUrl::parse("http://[::1]:9/p").unwrap().display(),
            "http://[::1]:9/p"
        );
        for bad in [
            "https://h/",
            "http://user:pw@h/",
            "http://h:99999/",
            "http:///x",
            "http://h/a b",
            "http://h/\n",
            "ftp://h",
            "http://h/#frag",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(event_for(true, false, false, false), Some(Event::Failed));
        assert_eq!(event_for(true, true, true, true), Some(Event::Failed));
        assert_eq!(event_for(false, true, false, false), Some(Event::Recovered));
        assert_eq!(event_for(false, false, true, false), None);
        assert_eq!(event_for(false, false, true, true), Some(Event::Changed));
        assert_eq!(event_for(false, false, false, true), None);
    }
}
