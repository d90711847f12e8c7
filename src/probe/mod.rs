//! Probe: one generated POSIX sh script per host, sent in ONE round trip, that prints a
//! machine-readable record for every resource (and a few facts about the host). Parsing those
//! records is pure; deciding what they mean is the job of each kind's `plan`.

use crate::kinds::PrimitiveSpec;
use crate::model::desired::{DesiredHost, sha256_hex};
use std::collections::BTreeMap;

/// The shell library every probe and apply script starts with.
pub const LIB: &str = include_str!("lib.sh");

/// Builds the probe script for a host whose plumb folder is `state_dir`.
pub fn probe_script(host: &DesiredHost, state_dir: &str) -> String {
    let mut s = String::with_capacity(LIB.len() + host.resources.len() * 64);
    s.push_str("PL_STATE=");
    s.push_str(&crate::shell::quote(state_dir));
    s.push('\n');
    s.push_str(LIB);
    s.push_str("pl_facts\n");
    let has = |f: fn(&PrimitiveSpec) -> bool| host.resources.iter().any(|r| f(&r.spec));
    if has(|s| matches!(s, PrimitiveSpec::ComposeStack(_))) {
        s.push_str("pl_compose_flavor\n");
    }
    if has(|s| matches!(s, PrimitiveSpec::SystemdUnit(_))) {
        s.push_str("pl_systemd\n");
    }
    // Resources probed by one path each (files, directories, symlinks) are read in batches:
    // `pl_paths` prints exactly what their `pl_path` lines would, with two processes per batch
    // instead of two per file.
    let mut batch: Vec<String> = Vec::new();
    let mut fragment = String::new();
    for (i, r) in host.resources.iter().enumerate() {
        fragment.clear();
        r.spec.engine().probe(i, &mut fragment);
        match single_path_probe(&fragment) {
            Some(args) => batch.push(args.to_string()),
            None => {
                flush_path_batch(&mut s, &mut batch);
                s.push_str(&fragment);
            }
        }
    }
    flush_path_batch(&mut s, &mut batch);
    s.push_str("printf 'H\\tdone\\n'\n");
    s
}

/// `TAG PATH` of a fragment that is exactly one `pl_path TAG PATH` command line.
fn single_path_probe(fragment: &str) -> Option<&str> {
    let line = fragment.strip_prefix("pl_path ")?.strip_suffix('\n')?;
    (!line.contains('\n')).then_some(line)
}

fn flush_path_batch(out: &mut String, batch: &mut Vec<String>) {
    match batch.len() {
        0 => {}
        1 => {
            out.push_str("pl_path ");
            out.push_str(&batch[0]);
            out.push('\n');
        }
        _ => {
            out.push_str("pl_paths");
            for args in batch.iter() {
                out.push(' ');
                out.push_str(args);
            }
            out.push('\n');
        }
    }
    batch.clear();
}

/// One record line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordLine {
    /// Sub-key after the index (`file`, `enabled`, ...); empty for the main record.
    pub key: String,
    /// Tab-separated fields after the tag.
    pub fields: Vec<String>,
    /// The whole line as printed, for hashing.
    pub raw: String,
}

/// The records of one resource.
#[derive(Clone, Copy, Debug)]
pub struct Records<'a> {
    lines: &'a [RecordLine],
}

impl<'a> Records<'a> {
    /// Wraps lines.
    pub fn new(lines: &'a [RecordLine]) -> Self {
        Records { lines }
    }

    /// The first record with this sub-key.
    pub fn get(&self, key: &str) -> Option<&'a [String]> {
        self.lines
            .iter()
            .find(|l| l.key == key)
            .map(|l| l.fields.as_slice())
    }

    /// Every record with this sub-key.
    pub fn all(&self, key: &'a str) -> impl Iterator<Item = &'a [String]> + 'a {
        self.lines
            .iter()
            .filter(move |l| l.key == key)
            .map(|l| l.fields.as_slice())
    }

    /// True when nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// SHA-256 of the raw lines whose sub-key is in `keys`, in order: the "actual state hash"
    /// that compare-and-swap checks right before writing.
    pub fn hash(&self, keys: &[&str]) -> String {
        sha256_hex(self.text(keys).as_bytes())
    }

    /// The raw lines whose sub-key is in `keys`, in order, each ending in a newline: what
    /// [`Records::hash`] hashes.
    pub fn text(&self, keys: &[&str]) -> String {
        let mut text = String::new();
        for l in self.lines.iter().filter(|l| keys.contains(&l.key.as_str())) {
            text.push_str(&l.raw);
            text.push('\n');
        }
        text
    }
}

/// Everything a probe reported about a host.
#[derive(Clone, Debug, Default)]
pub struct HostRecords {
    /// Host facts (`uid`, `hostname`, `state`, `compose`, `systemd`, `done`).
    pub facts: BTreeMap<String, String>,
    resources: BTreeMap<usize, Vec<RecordLine>>,
}

impl HostRecords {
    /// The records of resource `index`.
    pub fn of(&self, index: usize) -> Records<'_> {
        Records::new(self.resources.get(&index).map(Vec::as_slice).unwrap_or(&[]))
    }

    /// True when the probe ran to its end (its output was not cut short).
    pub fn complete(&self) -> bool {
        self.facts.contains_key("done")
    }
}

/// Parses probe output. Lines that are not records (a warning printed by a profile script, say)
/// are ignored.
pub fn parse_records(stdout: &str) -> HostRecords {
    let mut out = HostRecords::default();
    for line in stdout.lines() {
        let mut parts = line.split('\t');
        let Some(tag) = parts.next() else { continue };
        if tag == "H" {
            let key = parts.next().unwrap_or_default().to_string();
            let value = parts.collect::<Vec<_>>().join("\t");
            out.facts.insert(key, value);
            continue;
        }
        let (idx, key) = match tag.split_once('.') {
            Some((i, k)) => (i, k),
            None => (tag, ""),
        };
        let Ok(idx) = idx.parse::<usize>() else {
            continue;
        };
        out.resources.entry(idx).or_default().push(RecordLine {
            key: key.to_string(),
            fields: parts.map(str::to_string).collect(),
            raw: line.to_string(),
        });
    }
    out
}

/// What a path holds, parsed from a `pl_path` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathState {
    /// Nothing there.
    Absent,
    /// A regular file.
    File(FileFacts),
    /// A directory.
    Dir(Meta),
    /// A symlink and its target.
    Link(String),
    /// A device, socket, fifo...
    Other,
    /// The probe could not read it.
    Error(String),
}

/// Ownership and mode of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Mode bits (permission part).
    pub mode: u32,
    /// Numeric uid.
    pub uid: u32,
    /// Numeric gid.
    pub gid: u32,
    /// Owner name (`UNKNOWN` when the uid has no name).
    pub owner: String,
    /// Group name.
    pub group: String,
}

impl Meta {
    /// True when `want` (a name or a number) is the owner.
    pub fn owner_is(&self, want: &str) -> bool {
        self.owner == want || want.parse::<u32>().ok() == Some(self.uid)
    }

    /// True when `want` (a name or a number) is the group.
    pub fn group_is(&self, want: &str) -> bool {
        self.group == want || want.parse::<u32>().ok() == Some(self.gid)
    }
}

/// A regular file's facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileFacts {
    /// Ownership and mode.
    pub meta: Meta,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256.
    pub sha256: String,
}

fn parse_meta(s: &str) -> Option<(Meta, Option<u64>)> {
    let f: Vec<&str> = s.split(' ').collect();
    if f.len() < 5 {
        return None;
    }
    Some((
        Meta {
            mode: u32::from_str_radix(f[0], 8).ok()?,
            uid: f[1].parse().ok()?,
            gid: f[2].parse().ok()?,
            owner: f[3].to_string(),
            group: f[4].to_string(),
        },
        f.get(5).and_then(|s| s.parse().ok()),
    ))
}

/// Parses a `pl_path` record's fields.
pub fn parse_path(fields: Option<&[String]>) -> PathState {
    let Some(f) = fields else {
        return PathState::Error("no record (the probe stopped early)".into());
    };
    match f.first().map(String::as_str) {
        Some("absent") => PathState::Absent,
        Some("other") => PathState::Other,
        Some("link") => PathState::Link(f.get(1).cloned().unwrap_or_default()),
        Some("dir") => match f.get(1).and_then(|s| parse_meta(s)) {
            Some((m, _)) => PathState::Dir(m),
            None => PathState::Error("unreadable directory record".into()),
        },
        Some("file") => match (f.get(1).and_then(|s| parse_meta(s)), f.get(2)) {
            (Some((meta, Some(size))), Some(sha)) => PathState::File(FileFacts {
                meta,
                size,
                sha256: sha.clone(),
            }),
            _ => PathState::Error("unreadable file record".into()),
        },
        Some("error") => PathState::Error(f.get(1).cloned().unwrap_or_default()),
        other => PathState::Error(format!("unexpected record `{}`", other.unwrap_or(""))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_by_index_and_subkey() {
        let out = "H\tuid\t0\nnoise from a profile\n0\tfile\t644 0 0 root root 12\tabc\n1.file\tabsent\n1.enabled\tenabled\n1.active\tinactive\nH\tdone\n";
        let r = parse_records(out);
        assert!(r.complete());
        assert_eq!(r.facts["uid"], "0");
        match parse_path(r.of(0).get("")) {
            PathState::File(f) => {
                assert_eq!(f.meta.mode, 0o644);
                assert_eq!(f.size, 12);
                assert_eq!(f.sha256, "abc");
                assert!(f.meta.owner_is("root") && f.meta.owner_is("0"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_path(r.of(1).get("file")), PathState::Absent);
        assert_eq!(r.of(1).get("enabled"), Some(&["enabled".to_string()][..]));
        // The hash covers only the chosen keys.
        assert_eq!(
            r.of(1).hash(&["file", "enabled"]),
            sha256_hex(b"1.file\tabsent\n1.enabled\tenabled\n")
        );
        assert!(r.of(7).is_empty());
    }

    #[test]
    fn the_library_runs_in_a_real_shell() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "hello\n").unwrap();
        let script = format!(
            "PL_STATE=/nonexistent\n{LIB}pl_facts\npl_path 0 {}\npl_path 1 {}\npl_path 2 {}\npl_user 3 root\npl_group 4 nosuchgroupxyz\npl_guard 5 creates {}\npl_guard 6 unless false\nprintf 'H\\tdone\\n'\n",
            f.display(),
            dir.path().display(),
            dir.path().join("nope").display(),
            f.display()
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        let r = parse_records(&String::from_utf8_lossy(&out.stdout));
        assert!(r.complete(), "{}", String::from_utf8_lossy(&out.stderr));
        match parse_path(r.of(0).get("")) {
            PathState::File(ff) => assert_eq!(ff.sha256, sha256_hex(b"hello\n")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_path(r.of(1).get("")), PathState::Dir(_)));
        assert_eq!(parse_path(r.of(2).get("")), PathState::Absent);
        assert_eq!(r.of(3).get("").unwrap()[0], "present");
        assert!(r.of(3).get("").unwrap()[1].starts_with("root:x:0:0:"));
        assert_eq!(r.of(4).get("").unwrap()[0], "absent");
        assert_eq!(r.of(5).get("creates").unwrap()[0], "ok");
        assert_eq!(r.of(6).get("unless").unwrap()[0], "fail");
    }

    /// Runs the library's `sh` with `body` after it; returns stdout.
    fn run_lib(body: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("PL_STATE=/nonexistent\n{LIB}{body}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn a_batch_of_paths_prints_exactly_what_one_probe_per_path_prints() {
        use crate::shell::quote;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("file"), "hello\n").unwrap();
        std::fs::write(d.join("empty"), "").unwrap();
        std::fs::write(d.join("with space\tand tab"), "x").unwrap();
        // sha256sum escapes this name in its output: the batch must not trust that line.
        std::fs::write(d.join("back\\slash"), "y").unwrap();
        std::fs::write(d.join("glob*[x]"), "z").unwrap();
        std::fs::create_dir(d.join("dir")).unwrap();
        std::os::unix::fs::symlink(d.join("file"), d.join("link-to-file")).unwrap();
        std::os::unix::fs::symlink(d.join("dir"), d.join("link-to-dir")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", d.join("dangling")).unwrap();
        let fifo = d.join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let names = [
            "file",
            "absent",
            "empty",
            "dir",
            "with space\tand tab",
            "link-to-file",
            "back\\slash",
            "link-to-dir",
            "dangling",
            "fifo",
            "glob*[x]",
            "file",
        ];
        let pairs: Vec<(String, String)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("{i}.k"), quote(&d.join(n).display().to_string())))
            .collect();
        let one_by_one: String = pairs
            .iter()
            .map(|(t, p)| format!("pl_path {t} {p}\n"))
            .collect();
        let batched = format!(
            "pl_paths {}\n",
            pairs
                .iter()
                .map(|(t, p)| format!("{t} {p}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let expected = run_lib(&one_by_one);
        assert_eq!(expected.lines().count(), names.len(), "{expected}");
        assert!(expected.contains("\tfile\t"), "{expected}");
        assert!(expected.contains("\tdir\t"), "{expected}");
        assert!(expected.contains("\tlink\t"), "{expected}");
        assert!(expected.contains("\tother"), "{expected}");
        assert!(expected.contains("\tabsent"), "{expected}");
        assert_eq!(run_lib(&batched), expected);
        // Nothing there at all, and a batch of one.
        let none = format!("pl_paths 0 {} 1 {}\n", pairs[1].1, pairs[1].1);
        assert_eq!(run_lib(&none), format!("0\tabsent\n1\tabsent\n"));
        assert_eq!(
            run_lib(&format!("pl_paths 3 {}\n", pairs[0].1)),
            run_lib(&format!("pl_path 3 {}\n", pairs[0].1))
        );
    }

    #[test]
    fn the_probe_script_batches_single_path_resources_in_order() {
        use crate::kinds::testutil::{render, repo};
        let dir = repo(&[(
            "manifests/app.yaml",
            "kind: File\nhosts: host:pg1\npath: /etc/a\ncontent: a\n---\nkind: File\nhosts: host:pg1\npath: /etc/b\ncontent: b\n---\nkind: Directory\nhosts: host:pg1\npath: /etc/d\n---\nkind: User\nname: app\nhosts: host:pg1\n",
        )]);
        let h = render(&dir, "pg1");
        let script = probe_script(&h, "/var/lib/plumb");
        let body = &script[script.rfind("pl_facts\n").unwrap()..];
        let idx = |kind: &str, name: &str| {
            h.resources
                .iter()
                .position(|d| d.kind == kind && d.name == name)
                .unwrap()
        };
        assert_eq!(
            body,
            format!(
                "pl_facts\npl_user {} app\npl_paths {} /etc/d {} /etc/a {} /etc/b\nprintf 'H\\tdone\\n'\n",
                idx("User", "app"),
                idx("Directory", "/etc/d"),
                idx("File", "/etc/a"),
                idx("File", "/etc/b"),
            )
        );
    }
}
