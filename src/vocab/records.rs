//! The probe protocol: what a host prints and how plumb reads it. Both sides live here, the sh
//! that prints the generic records (`probe.sh`: paths, folders, host facts, the state file) and
//! the strict parser. Each kind adds its own records (its shell fragment) and reads them back
//! with [`Records`]; nothing here knows a kind.
//!
//! A record is one line: `TAG<TAB>field<TAB>field...`; TAG is `H` (a host fact), `A` (a folder on
//! the way to a managed path) or a resource index with an optional sub-key (`3`, `3.compose`).
//! Every field is printable ASCII without tabs: text a host user could choose is printed
//! base64-encoded, so no byte of it can end a record or start another.

use crate::model::desired::sha256_hex;
use std::collections::BTreeMap;

/// The shell library every probe and apply script starts with: the generic record printers.
pub const LIB: &str = include_str!("probe.sh");

/// The protocol version the probe announces in its first record.
pub const PROTOCOL: &str = "1";

/// Every proper ancestor folder of the given absolute paths, `/` included, sorted (so parents
/// come before their children) and without repeats.
pub fn ancestor_dirs(paths: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut dirs = std::collections::BTreeSet::new();
    for p in paths {
        let mut cur = p.as_str();
        while let Some((parent, _)) = cur.rsplit_once('/') {
            let parent = if parent.is_empty() { "/" } else { parent };
            if !dirs.insert(parent.to_string()) || parent == "/" {
                break;
            }
            cur = parent;
        }
    }
    dirs.into_iter().collect()
}

/// One record line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordLine {
    /// Sub-key after the index (`compose`, `enabled`, ...); empty for the main record.
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

    /// The record with this sub-key (the parser guarantees there is at most one, except for
    /// the sub-keys in [`MULTI_KEYS`]).
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

/// Sub-keys a resource may report more than once (one line per package, per container).
pub const MULTI_KEYS: &[&str] = &["pkg", "ps"];

/// The host facts every probe reports, each once (kinds add their own: see
/// [`parse_records`]).
pub const FACT_KEYS: &[&str] = &["begin", "uid", "hostname", "state", "done"];

/// Why a probe's output is refused. Nothing the host printed is repeated here: the line
/// number says where to look (`plumb converge -v` logs the output's size, never its text).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The start record never came.
    #[error("the probe's output has no start record (was the script run by a POSIX sh?)")]
    NoBegin,
    /// The probe speaks another protocol version.
    #[error("the probe announced protocol `{0}`, this plumb speaks {PROTOCOL}")]
    Protocol(String),
    /// A line that is not a well-formed record.
    #[error("line {line} of the probe's output is not a well-formed record: {why}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A record that may appear once appeared again.
    #[error("line {line} of the probe's output repeats the record `{record}`")]
    Duplicate {
        /// 1-based line number.
        line: usize,
        /// Which record.
        record: String,
    },
    /// The output stopped before the end record.
    #[error("the probe did not complete: its output was cut short")]
    Incomplete,
}

/// Everything a probe reported about a host.
#[derive(Clone, Debug, Default)]
pub struct HostRecords {
    /// Host facts (`uid`, `hostname`, `state`, `compose`, `systemd`, `done`); `state` holds
    /// all its fields joined by a tab.
    pub facts: BTreeMap<String, String>,
    resources: BTreeMap<usize, Vec<RecordLine>>,
    /// The folders on the way to managed paths, by position in the probed list.
    dirs: BTreeMap<usize, Vec<String>>,
}

impl HostRecords {
    /// The records of resource `index`.
    pub fn of(&self, index: usize) -> Records<'_> {
        Records::new(self.resources.get(&index).map(Vec::as_slice).unwrap_or(&[]))
    }

    /// The `A` record of folder `index`, if any.
    pub fn dir(&self, index: usize) -> Option<&[String]> {
        self.dirs.get(&index).map(Vec::as_slice)
    }

    /// True when the probe ran to its end (its output was not cut short).
    pub fn complete(&self) -> bool {
        self.facts.contains_key("done")
    }

    /// The folders probed under the names `dirs` (the list the probe was built with).
    pub fn dir_states(&self, dirs: &[String]) -> BTreeMap<String, DirState> {
        dirs.iter()
            .enumerate()
            .map(|(i, d)| (d.clone(), parse_dir(self.dir(i))))
            .collect()
    }
}

/// True for a byte a record field may hold: printable ASCII (tabs separate fields).
fn field_byte(b: u8) -> bool {
    (0x20..0x7f).contains(&b)
}

/// Parses probe output strictly. Lines before the start record are ignored (a login shell's
/// rc file may print something); after it, every line must be a well-formed record with a tag
/// the probe can print: `H` (a fact of [`FACT_KEYS`] or `kind_facts`, once), `A` (a folder index below `dirs`) or a
/// resource index below `resources` with an optional lower-case sub-key (once per resource,
/// except [`MULTI_KEYS`]). Fields hold printable ASCII only. Anything else is an error for the
/// host: a record a host user could forge is never taken for one plumb asked for.
pub fn parse_records(
    stdout: &str,
    resources: usize,
    dirs: usize,
    kind_facts: &[&str],
) -> Result<HostRecords, ProbeError> {
    let mut out = HostRecords::default();
    let mut begun = false;
    let mut seen: std::collections::BTreeSet<(usize, String)> = Default::default();
    for (n, line) in stdout.split('\n').enumerate() {
        let lineno = n + 1;
        if !begun {
            if let Some(v) = line.strip_prefix("H\tbegin\t") {
                if v != PROTOCOL {
                    return Err(ProbeError::Protocol(
                        v.chars()
                            .filter(|c| c.is_ascii_alphanumeric())
                            .take(16)
                            .collect(),
                    ));
                }
                begun = true;
                out.facts.insert("begin".into(), v.to_string());
            }
            continue;
        }
        if line.is_empty() {
            // No record; the output ends with one after its last newline.
            continue;
        }
        if out.complete() {
            return Err(ProbeError::Malformed {
                line: lineno,
                why: "a record after the end record",
            });
        }
        let malformed = |why| ProbeError::Malformed { line: lineno, why };
        if !line.bytes().all(|b| b == b'\t' || field_byte(b)) {
            return Err(malformed("a byte outside printable ASCII"));
        }
        let mut parts = line.split('\t');
        let tag = parts.next().unwrap_or_default();
        let fields: Vec<String> = parts.map(str::to_string).collect();
        match tag {
            "H" => {
                let Some((key, rest)) = fields.split_first() else {
                    return Err(malformed("a fact without a name"));
                };
                if !FACT_KEYS.contains(&key.as_str()) && !kind_facts.contains(&key.as_str()) {
                    return Err(malformed("an unknown fact"));
                }
                if out.facts.contains_key(key.as_str()) {
                    return Err(ProbeError::Duplicate {
                        line: lineno,
                        record: format!("H {key}"),
                    });
                }
                if rest.is_empty() != (key == "done") {
                    return Err(malformed("a fact with a wrong number of fields"));
                }
                out.facts.insert(key.clone(), rest.join("\t"));
            }
            "A" => {
                let Some(i) = fields.first().and_then(|i| parse_index(i)) else {
                    return Err(malformed("a folder record without its index"));
                };
                if i >= dirs {
                    return Err(malformed("a folder index the probe did not ask for"));
                }
                if out.dirs.insert(i, fields[1..].to_vec()).is_some() {
                    return Err(ProbeError::Duplicate {
                        line: lineno,
                        record: format!("A {i}"),
                    });
                }
            }
            _ => {
                let (idx, key) = tag.split_once('.').unwrap_or((tag, ""));
                let Some(idx) = parse_index(idx) else {
                    return Err(malformed("an unknown tag"));
                };
                if idx >= resources {
                    return Err(malformed("a resource index the probe did not ask for"));
                }
                if !key.bytes().all(|b| b.is_ascii_lowercase())
                    || (tag.contains('.') && key.is_empty())
                {
                    return Err(malformed("an unknown sub-key"));
                }
                if !MULTI_KEYS.contains(&key) && !seen.insert((idx, key.to_string())) {
                    return Err(ProbeError::Duplicate {
                        line: lineno,
                        record: tag.to_string(),
                    });
                }
                out.resources.entry(idx).or_default().push(RecordLine {
                    key: key.to_string(),
                    fields,
                    raw: line.to_string(),
                });
            }
        }
    }
    if !begun {
        return Err(ProbeError::NoBegin);
    }
    if !out.complete() {
        return Err(ProbeError::Incomplete);
    }
    Ok(out)
}

/// A decimal index without sign or leading zeros (so one number has one spelling).
fn parse_index(s: &str) -> Option<usize> {
    if s.is_empty() || s.len() > 9 || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Decodes a base64 field the probe printed for text a host user may choose.
pub fn decode_field(b64: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// Decodes a base64 field holding the output of a command that ends lines with `\n` (e.g.
/// `readlink`), without the last newline; None when it is not base64 of UTF-8.
pub fn decode_text(b64: &str) -> Option<String> {
    let bytes = decode_field(b64)?;
    let mut text = String::from_utf8(bytes).ok()?;
    if text.ends_with('\n') {
        text.pop();
    }
    Some(text)
}

/// A folder on the way to a managed path, from an `A` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirState {
    /// Nothing there (plumb creates it).
    Absent,
    /// A real folder.
    Dir(Meta),
    /// A symlink, with its target.
    Link(String),
    /// Something else (a file, a device...), or unreadable.
    Other,
}

/// Parses an `A` record's fields (after the index).
pub fn parse_dir(fields: Option<&[String]>) -> DirState {
    match fields {
        Some([k]) if k == "absent" => DirState::Absent,
        Some([k, meta]) if k == "dir" => match parse_meta(meta) {
            Some((m, None)) => DirState::Dir(m),
            _ => DirState::Other,
        },
        Some([k, target]) if k == "link" => {
            DirState::Link(decode_text(target).unwrap_or_else(|| "?".into()))
        }
        _ => DirState::Other,
    }
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
    if f.len() != 5 && f.len() != 6 {
        return None;
    }
    let size = match f.get(5) {
        Some(s) => Some(s.parse().ok()?),
        None => None,
    };
    Some((
        Meta {
            mode: u32::from_str_radix(f[0], 8).ok()?,
            uid: f[1].parse().ok()?,
            gid: f[2].parse().ok()?,
            owner: f[3].to_string(),
            group: f[4].to_string(),
        },
        size,
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
        Some("link") => match f.get(1).and_then(|t| decode_text(t)) {
            Some(target) => PathState::Link(target),
            None => PathState::Error("unreadable symlink record".into()),
        },
        Some("dir") => match f.get(1).and_then(|s| parse_meta(s)) {
            Some((m, _)) => PathState::Dir(m),
            None => PathState::Error("unreadable directory record".into()),
        },
        Some("file") => match (f.get(1).and_then(|s| parse_meta(s)), f.get(2)) {
            (Some((meta, Some(size))), Some(sha))
                if sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                PathState::File(FileFacts {
                    meta,
                    size,
                    sha256: sha.clone(),
                })
            }
            _ => PathState::Error("unreadable file record".into()),
        },
        Some("error") => PathState::Error(f.get(1).cloned().unwrap_or_default()),
        _ => PathState::Error("unexpected record".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_records_by_index_and_subkey() {
        let sha = "ab".repeat(32);
        let out = format!(
            "noise from a profile\nH\tbegin\t1\nH\tuid\t0\n0\tfile\t644 0 0 root root 12\t{sha}\n1.file\tabsent\n1.enabled\tenabled\n1.active\tinactive\nH\tdone\n"
        );
        let r = parse_records(&out, 2, 0, &[]).unwrap();
        assert!(r.complete());
        assert_eq!(r.facts["uid"], "0");
        match parse_path(r.of(0).get("")) {
            PathState::File(f) => {
                assert_eq!(f.meta.mode, 0o644);
                assert_eq!(f.size, 12);
                assert_eq!(f.sha256, sha);
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
            "PL_STATE=/nonexistent\n{LIB}printf 'H\\tbegin\\t1\\n'\npl_facts\npl_path 0 {}\npl_path 1 {}\npl_path 2 {}\nprintf 'H\\tdone\\n'\n",
            f.display(),
            dir.path().display(),
            dir.path().join("nope").display(),
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        let r = parse_records(&String::from_utf8_lossy(&out.stdout), 3, 0, &[])
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert!(r.complete());
        match parse_path(r.of(0).get("")) {
            PathState::File(ff) => assert_eq!(ff.sha256, sha256_hex(b"hello\n")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_path(r.of(1).get("")), PathState::Dir(_)));
        assert_eq!(parse_path(r.of(2).get("")), PathState::Absent);
        assert_eq!(r.facts["state"], "none");
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
    fn the_parser_refuses_what_the_probe_cannot_print() {
        let ok = "H\tbegin\t1\nH\tuid\t0\n0\tabsent\nA\t0\tabsent\nH\tdone\n";
        assert!(parse_records(ok, 1, 1, &[]).is_ok());
        let bad = [
            (
                "H\tbegin\t1\nH\tstate\tnone\nH\tstate\tnone\nH\tdone\n",
                "repeats",
            ),
            ("H\tbegin\t1\nH\tnew\tx\nH\tdone\n", "unknown fact"),
            ("H\tbegin\t1\n0\tabsent\n0\tabsent\nH\tdone\n", "repeats"),
            ("H\tbegin\t1\n7\tabsent\nH\tdone\n", "did not ask"),
            ("H\tbegin\t1\nA\t3\tabsent\nH\tdone\n", "did not ask"),
            ("H\tbegin\t1\n0\tlink\t\u{1b}[2J\nH\tdone\n", "printable"),
            ("H\tbegin\t1\nX\tdone\nH\tdone\n", "unknown tag"),
            ("H\tbegin\t1\n00\tabsent\nH\tdone\n", "unknown tag"),
            ("H\tbegin\t1\nH\tdone\n0\tabsent\n", "after the end"),
            ("H\tbegin\t1\n0\tabsent\n", "cut short"),
            ("H\tuid\t0\nH\tdone\n", "no start"),
            ("H\tbegin\t2\nH\tdone\n", "protocol"),
        ];
        for (text, why) in bad {
            let e = parse_records(text, 1, 1, &[]).unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        // The multi-line records of packages and containers may repeat.
        let multi = "H\tbegin\t1\n0.pkg\ta\tmissing\n0.pkg\tb\tmissing\nH\tdone\n";
        assert_eq!(
            parse_records(multi, 1, 0, &[])
                .unwrap()
                .of(0)
                .all("pkg")
                .count(),
            2
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

        /// Whatever bytes a host user puts in a symlink target (every control character
        /// included), the probe reports exactly that target, and no other record: not a fact,
        /// not another resource, not a folder.
        #[test]
        fn a_symlink_target_is_reported_exactly_and_forges_nothing(
            target in proptest::collection::vec(1u8..=255, 1..120)
        ) {
            use std::os::unix::ffi::OsStrExt as _;
            let dir = tempfile::tempdir().unwrap();
            let link = dir.path().join("l");
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &link).unwrap();
            let q = crate::shell::quote(&link.display().to_string());
            let script = format!(
                "PL_STATE=/nonexistent\n{LIB}printf 'H\\tbegin\\t1\\n'\npl_facts\npl_paths 0 {q} 1 {q}\npl_dirs 0 {q}\nprintf 'H\\tdone\\n'\n"
            );
            let out = std::process::Command::new("sh").arg("-c").arg(script).output().unwrap();
            let r = parse_records(&String::from_utf8_lossy(&out.stdout), 2, 1, &[]).unwrap();
            let keys: Vec<&str> = r.facts.keys().map(String::as_str).collect();
            proptest::prop_assert_eq!(keys, ["begin", "done", "hostname", "state", "uid"]);
            proptest::prop_assert_eq!(r.facts["state"].as_str(), "none");
            for i in 0..2 {
                let want = match String::from_utf8(target.clone()) {
                    Ok(t) => PathState::Link(t),
                    Err(_) => PathState::Error("unreadable symlink record".into()),
                };
                proptest::prop_assert_eq!(parse_path(r.of(i).get("")), want);
                proptest::prop_assert_eq!(r.of(i).text(&["", "x"]).lines().count(), 1);
            }
            let d = parse_dir(r.dir(0));
            proptest::prop_assert!(matches!(d, DirState::Link(_)), "{:?}", d);
        }

        /// Host words (unit states, versions) come back as one printable token.
        #[test]
        fn host_words_become_one_printable_token(word in proptest::collection::vec(1u8..=255, 0..60)) {
            use std::os::unix::ffi::OsStrExt as _;
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{LIB}pl_token \"$1\"; printf '%s' \"$PL_TOK\""))
                .arg("sh")
                .arg(std::ffi::OsStr::from_bytes(&word))
                .output()
                .unwrap();
            proptest::prop_assert!(out.stdout.iter().all(|b| (0x20..0x7f).contains(b)), "{:?}", out.stdout);
        }

        /// Arbitrary output never panics the parser, and whatever it accepts holds printable
        /// fields only.
        #[test]
        fn the_parser_accepts_only_printable_records(lines in proptest::collection::vec(".{0,40}", 0..12)) {
            let text = format!("H\tbegin\t1\n{}\nH\tdone\n", lines.join("\n"));
            if let Ok(r) = parse_records(&text, 4, 4, &[]) {
                for i in 0..4 {
                    for l in r.of(i).all("") {
                        for f in l {
                            proptest::prop_assert!(f.bytes().all(|b| (0x20..0x7f).contains(&b)));
                        }
                    }
                }
            }
        }
    }
}
