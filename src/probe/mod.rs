//! Probe: one generated POSIX sh script per host, sent in ONE round trip, that prints a
//! machine-readable record for every resource (and a few facts about the host). Parsing those
//! records is pure; deciding what they mean is the job of each kind's `plan`.

use crate::kinds::DesiredHost;
use crate::vocab::records::{HostRecords, LIB, PROTOCOL, ProbeError, ancestor_dirs, parse_records};

/// Builds the probe script for a host whose plumb folder is `state_dir`.
pub fn probe_script(host: &DesiredHost, state_dir: &str) -> String {
    let mut s = String::with_capacity(LIB.len() + host.resources.len() * 64);
    s.push_str("PL_STATE=");
    s.push_str(&crate::shell::quote(state_dir));
    s.push('\n');
    s.push_str(LIB);
    s.push_str(&crate::kinds::shells(
        host.resources.iter().map(|r| &r.spec),
    ));
    s.push_str(&format!("printf 'H\\tbegin\\t{PROTOCOL}\\n'\npl_facts\n"));
    s.push_str(&crate::kinds::facts(host.resources.iter().map(|r| &r.spec)));
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
    // The folders on the way to every managed path, read after the paths themselves.
    dirs_probe(&mut s, &host_dirs(host));
    s.push_str("printf 'H\\tdone\\n'\n");
    s
}

/// Parses a host's probe output against what was probed (its resources, folders and the host
/// facts its kinds print).
pub fn parse(stdout: &str, host: &DesiredHost) -> Result<HostRecords, ProbeError> {
    parse_records(
        stdout,
        host.resources.len(),
        host_dirs(host).len(),
        &crate::kinds::fact_keys(),
    )
}

/// Every folder on the way to a path the host's resources write, parents first: what the
/// probe's `A` records describe, by position in this list.
pub fn host_dirs(host: &DesiredHost) -> Vec<String> {
    ancestor_dirs(host.resources.iter().flat_map(|r| r.spec.paths()))
}

/// Appends a `pl_dirs` command for `dirs` (nothing when empty); their records are `A N ...`.
pub fn dirs_probe(out: &mut String, dirs: &[String]) {
    if dirs.is_empty() {
        return;
    }
    out.push_str("pl_dirs");
    for (i, d) in dirs.iter().enumerate() {
        out.push_str(&format!(" {i} {}", crate::shell::quote(d)));
    }
    out.push('\n');
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

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn the_probe_script_batches_single_path_resources_in_order() {
        use crate::testutil::{render, repo};
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
                "pl_facts\npl_user {} app\npl_paths {} /etc/d {} /etc/a {} /etc/b\npl_dirs 0 / 1 /etc\nprintf 'H\\tdone\\n'\n",
                idx("User", "app"),
                idx("Directory", "/etc/d"),
                idx("File", "/etc/a"),
                idx("File", "/etc/b"),
            )
        );
    }

    /// Every `pl_*` function a generated script calls is defined by the libraries: a function
    /// lost from lib.sh makes the shell print "not found" and carry on, which no record shows.
    #[test]
    fn every_function_the_scripts_call_is_defined() {
        use crate::testutil::{render, repo};
        let dir = repo(&[(
            "manifests/app.yaml",
            "kind: File\nhosts: host:pg1\npath: /etc/a\ncontent: a\n---\nkind: Directory\nhosts: host:pg1\npath: /etc/d\n---\nkind: User\nname: root\nhosts: host:pg1\n---\nkind: Group\nname: nosuchgroupxyz\nhosts: host:pg1\n---\nkind: Package\nname: p\nhosts: host:pg1\npackages: [curl]\n---\nkind: Symlink\nhosts: host:pg1\npath: /etc/l\ntarget: /etc/a\n---\nkind: SystemdUnit\nname: x.service\nhosts: host:pg1\ncontent: \"[Service]\\nExecStart=/bin/true\\n\"\n---\nkind: ComposeStack\nname: s\nhosts: host:pg1\ndir: /opt/s\ncontent: \"services: {}\\n\"\n---\nkind: Command\nname: c\nhosts: host:pg1\nrun: \"true\"\ncreates: /etc/a\n",
        )]);
        let h = render(&dir, "pg1");
        let libs = format!(
            "{LIB}{}{}",
            crate::apply::LIB,
            crate::kinds::shells(h.resources.iter().map(|r| &r.spec))
        );
        let defined: std::collections::BTreeSet<String> = libs
            .lines()
            .filter_map(|l| l.split_once("() {").map(|(n, _)| n.trim().to_string()))
            .collect();
        let script = probe_script(&h, "/var/lib/plumb");
        let mut called = std::collections::BTreeSet::new();
        for text in [script.as_str(), libs.as_str()] {
            for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("pl_")
                    && !word.starts_with("pl_ok_")
                    && !word.starts_with("pl_cas_")
                {
                    called.insert(word.to_string());
                }
            }
        }
        // Variables share the prefix: a word is a call when it is not assigned, expanded or
        // read into.
        let read_into: Vec<&str> = libs
            .lines()
            .filter_map(|l| l.split_once("read -r ").map(|(_, rest)| rest))
            .collect();
        let calls: Vec<&String> = called
            .iter()
            .filter(|w| {
                !libs.contains(&format!("{w}="))
                    && !libs.contains(&format!("${w}"))
                    && !libs.contains(&format!("${{{w}"))
                    && !read_into.iter().any(|r| {
                        r.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                            .any(|x| x == w.as_str())
                    })
            })
            .collect();
        for w in calls {
            assert!(
                defined.contains(w.as_str()),
                "`{w}` is called but not defined"
            );
        }
        // And the probe runs: every fact it must print is there.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let r = parse(&String::from_utf8_lossy(&out.stdout), &h)
            .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&out.stderr)));
        for fact in ["uid", "hostname", "state", "compose", "systemd"] {
            assert!(r.facts.contains_key(fact), "no `{fact}` fact");
        }
        // Each kind's fragment printed the records its planner reads.
        let idx = |kind: &str| h.resources.iter().position(|d| d.kind == kind).unwrap();
        let user = r.of(idx("User"));
        assert_eq!(user.get("").unwrap()[0], "present");
        let entry = crate::vocab::records::decode_text(&user.get("").unwrap()[1]).unwrap();
        assert!(entry.starts_with("root:x:0:0:"), "{entry}");
        assert_eq!(r.of(idx("Group")).get("").unwrap()[0], "absent");
        assert!(r.of(idx("Package")).get("mgr").is_some());
        assert!(r.of(idx("SystemdUnit")).get("enabled").is_some());
        assert!(r.of(idx("ComposeStack")).get("ps").is_some());
        let cmd = r.of(idx("Command"));
        assert_eq!(cmd.get("creates").unwrap()[0], "fail");
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("not found"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
