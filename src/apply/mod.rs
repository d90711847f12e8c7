//! Apply: turn a host's plan into ONE shell script (steps, compare-and-swap checks, handlers,
//! the host state file) and read back what happened. Building the script is pure; sending it
//! is the transport's job.
//!
//! Guarantees the script gives: every file is replaced atomically (temp file in the target
//! folder, fsync, owner and mode, rename) with the previous version kept under
//! /var/lib/plumb/backup; right before a resource is changed its actual state is hashed again
//! and compared with the hash the plan was made against (a mismatch refuses that resource);
//! `systemctl daemon-reload` runs once, after unit files changed and before units are started;
//! handlers run once, after the resources, only if something that notifies them changed.

use crate::kinds::DesiredHost;
use crate::kinds::PrimitiveSpec;
use crate::kinds::certificate::CertificateState;
use crate::model::desired::Content;
use crate::plan::HostPlan;
use crate::shell::quote;
use crate::vocab::state::HostState;
use crate::vocab::step::{ContentRef, Step};
use base64::Engine as _;
use std::fmt::Write as _;

/// The apply library appended to the probe library.
pub const LIB: &str = include_str!("lib.sh");

/// Problems building an apply script.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A step refers to content that is not in the plan.
    #[error("content {0} is missing from the plan (the repo changed since planning?)")]
    MissingContent(String),
    /// Certificate issuance failed.
    #[error("cannot issue certificate {path}: {reason}")]
    Issue {
        /// Certificate path.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Issues certificates on the controller (implemented with the repo's CA keys).
pub trait Issuer {
    /// Returns (certificate PEM, key PEM) for the desired certificate.
    fn issue(&self, want: &CertificateState) -> Result<(String, String), String>;
}

/// Replaces each `IssueCertificate` step with the writes of a freshly issued key, certificate
/// and CA file. The key is sensitive content; it exists only in memory and in the script.
pub fn issue_certificates(
    plan: &mut HostPlan,
    desired: &DesiredHost,
    issuer: &dyn Issuer,
) -> Result<(), ApplyError> {
    for r in &mut plan.resources {
        let mut steps = Vec::with_capacity(r.steps.len());
        for s in std::mem::take(&mut r.steps) {
            let Step::IssueCertificate { index, .. } = &s else {
                steps.push(s);
                continue;
            };
            let Some(PrimitiveSpec::Certificate(c)) =
                desired.resources.get(*index).map(|d| &d.spec)
            else {
                steps.push(s);
                continue;
            };
            let (cert_pem, key_pem) = issuer.issue(c).map_err(|reason| ApplyError::Issue {
                path: c.cert_path.clone(),
                reason,
            })?;
            let key = Content::sensitive(key_pem.into_bytes());
            let cert = Content::plain(cert_pem.into_bytes());
            for (path, content, mode) in [
                (&c.key_path, key, c.key_mode),
                (&c.cert_path, cert, c.cert_mode),
            ] {
                steps.push(Step::WriteFile {
                    path: path.clone(),
                    content: ContentRef::of(&content),
                    owner: c.owner.clone(),
                    group: c.group.clone(),
                    mode,
                });
                plan.contents.insert(content.sha256(), content);
            }
        }
        r.steps = steps;
    }
    Ok(())
}

fn base64_lines(bytes: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(b64.len() + b64.len() / 76 + 2);
    for chunk in b64.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Heredoc terminator: base64 never contains `_`, so it cannot appear in the body.
const EOF_MARK: &str = "PLUMB_EOF";

/// A random temp name in `path`'s folder: a host user cannot guess it before it exists.
fn temp_for(path: &str) -> String {
    let parent = match path.rsplit_once('/') {
        Some(("", _)) | None => "",
        Some((p, _)) => p,
    };
    format!("{parent}/.plumb-tmp.{}", crate::shell::random_hex(10))
}

fn write_content(
    out: &mut String,
    tag: &str,
    path: &str,
    owner: &str,
    group: &str,
    mode: &str,
    content: &Content,
) {
    let _ = writeln!(
        out,
        "pl_do {tag} pl_write {} {} {} {} {} {} <<'{EOF_MARK}'",
        quote(path),
        quote(owner),
        quote(group),
        mode,
        content.sha256(),
        quote(&temp_for(path))
    );
    out.push_str(&base64_lines(content.bytes()));
    out.push_str(EOF_MARK);
    out.push('\n');
}

fn opt(s: &Option<String>) -> String {
    quote(s.as_deref().unwrap_or(""))
}

/// Switches the script to the user whose hands write `path` (see [`crate::plan::chain`]);
/// nothing when the plan writes every path as root.
fn domain_shell(out: &mut String, tag: &str, path: Option<&str>, plan: &HostPlan) {
    if plan.domains.is_empty() {
        return;
    }
    let Some(path) = path else { return };
    let user = plan.domains.get(path).map(String::as_str).unwrap_or("root");
    let _ = writeln!(out, "pl_do {tag} pl_as {}", quote(user));
}

/// Shell for one step; `tag` is `R <index>`, `P <index>` or `X <index>`.
fn step_shell(out: &mut String, tag: &str, step: &Step, plan: &HostPlan) -> Result<(), ApplyError> {
    let q = |s: &str| quote(s);
    domain_shell(out, tag, step.path(), plan);
    match step {
        Step::WriteFile {
            path,
            content,
            owner,
            group,
            mode,
        } => {
            let c = plan
                .contents
                .get(&content.sha256)
                .ok_or_else(|| ApplyError::MissingContent(content.sha256.clone()))?;
            write_content(out, tag, path, owner, group, &mode.to_string(), c);
        }
        Step::SetMeta {
            path,
            owner,
            group,
            mode,
        } => {
            let _ = writeln!(
                out,
                "pl_do {tag} pl_meta {} {} {} {}",
                q(path),
                opt(owner),
                opt(group),
                quote(&mode.map(|m| m.to_string()).unwrap_or_default())
            );
        }
        Step::Mkdir {
            path,
            owner,
            group,
            mode,
        } => {
            let _ = writeln!(
                out,
                "pl_do {tag} pl_mkdir {} {} {} {mode}",
                q(path),
                q(owner),
                q(group)
            );
        }
        Step::Remove { path } => {
            let _ = writeln!(out, "pl_do {tag} pl_rm {}", q(path));
        }
        Step::RemoveDir { path } => {
            let _ = writeln!(out, "pl_do {tag} pl_rmdir {}", q(path));
        }
        Step::Symlink {
            path,
            target,
            owner,
            group,
        } => {
            let _ = writeln!(
                out,
                "pl_do {tag} pl_symlink {} {} {} {} {}",
                q(path),
                q(target),
                q(owner),
                q(group),
                q(&temp_for(path))
            );
        }
        Step::DaemonReload => {
            let _ = writeln!(out, "pl_do {tag} systemctl daemon-reload");
        }
        Step::Exec { argv, .. } => {
            let words: Vec<String> = argv.iter().map(|w| q(w)).collect();
            let _ = writeln!(out, "pl_do {tag} {}", words.join(" "));
        }
        Step::IssueCertificate { .. } => {
            // Replaced by `issue_certificates` before the script is built; reaching here is a bug.
            let _ = writeln!(
                out,
                "printf '%s\\tfailed\\tcertificate was not issued\\n' '{tag}'; exit 1"
            );
        }
    }
    Ok(())
}

/// Builds the apply script of a host. `previous` is the state the probe read; the state file is
/// first widened to previous + next (so an interrupted run still knows what it may have
/// created), then set to `next` once everything succeeded.
pub fn apply_script(
    plan: &HostPlan,
    desired: &DesiredHost,
    previous: &HostState,
    state_dir: &str,
    run_id: &str,
) -> Result<String, ApplyError> {
    let mut s = String::with_capacity(16 * 1024);
    let _ = writeln!(s, "PL_STATE={}", quote(state_dir));
    s.push_str(crate::vocab::records::LIB);
    s.push_str(LIB);
    s.push_str(&crate::kinds::shells(
        desired.resources.iter().map(|d| &d.spec),
    ));
    // Everything runs inside one function called on the last line: the shell executes nothing
    // until the whole script has arrived, so a connection cut mid-transfer changes nothing.
    s.push_str("pl_main() {\n");
    let _ = writeln!(s, "PL_RUN={}", quote(run_id));
    // The watchdog stops this run if plumb's session goes away; the TERM trap then removes
    // this run's temp files.
    s.push_str(
        "pl_watchdog\ntrap pl_stopped TERM\nPL_ERR=$(mktemp) || exit 1\ntrap 'pl_unwatch; pl_sync_dirs; rm -f \"$PL_ERR\" \"$PL_ERR.cas\"' EXIT\npl_ids\n",
    );
    s.push_str("[ -d \"$PL_BACKUP\" ] || (umask 077; mkdir -p \"$PL_BACKUP\") || exit 1\n");
    let state_file = format!("{}/state", state_dir.trim_end_matches('/'));
    let widened = previous.union(&plan.next_state);
    // Unless the state file already lists everything this run may create.
    if widened != *previous {
        write_content(
            &mut s,
            "S 0",
            &state_file,
            "",
            "",
            "0600",
            &Content::plain(widened.to_json()),
        );
    }

    // No name from the repo or the host appears in a comment or anywhere else unquoted: the
    // script says "prune 3", the report says which resource that is.
    for (i, p) in plan.prune.iter().enumerate() {
        let _ = writeln!(s, "# prune {i}");
        for step in &p.steps {
            step_shell(&mut s, &format!("P {i}"), step, plan)?;
        }
        let _ = writeln!(s, "printf 'P\\t{i}\\tok\\n'");
    }

    // Steps that must follow `daemon-reload` wait until every resource of their rank (every
    // unit file of the run) was written; then one reload, then them.
    let mut deferred: Vec<(usize, &Step)> = Vec::new();
    let mut reload_needed = false;
    let mut pending_rank: Option<u8> = None;
    let mut staged = Staged::default();
    let mut staged_rank = None;
    for (r, d) in plan.resources.iter().zip(&desired.resources) {
        if pending_rank.is_some_and(|p| d.spec.rank() > p) {
            flush_units(&mut s, &deferred, reload_needed, plan)?;
            deferred.clear();
            reload_needed = false;
            pending_rank = None;
        }
        if r.steps.is_empty() {
            continue;
        }
        if staged_rank != Some(d.spec.rank()) {
            staged_rank = Some(d.spec.rank());
            stage_writes(&mut s, plan, desired, d.spec.rank(), &mut staged)?;
        }
        let i = r.index;
        let tag = format!("R {i}");
        let _ = writeln!(s, "# resource {i}");
        let mut cas = String::new();
        d.spec.engine().cas_probe(i, &mut cas);
        let _ = writeln!(s, "pl_cas_{i}() {{\n{cas}:\n}}");
        let _ = match &r.actual_text {
            Some(text) => writeln!(
                s,
                "pl_ok_{i}=0\nif pl_check_text {i} pl_cas_{i} {}; then",
                quote(text)
            ),
            None => writeln!(
                s,
                "pl_ok_{i}=0\nif pl_check {i} {} pl_cas_{i}; then",
                r.actual_sha256
            ),
        };
        for (k, step) in r.steps.iter().enumerate() {
            match step {
                Step::DaemonReload => {
                    reload_needed = true;
                    pending_rank = Some(d.spec.rank());
                }
                st if st.after_reload() => {
                    deferred.push((i, st));
                    pending_rank = Some(d.spec.rank());
                }
                Step::WriteFile {
                    path,
                    content,
                    owner,
                    group,
                    mode,
                } if staged.temp(i, k).is_some() => {
                    domain_shell(&mut s, &tag, Some(path), plan);
                    let _ = writeln!(
                        s,
                        "pl_do {tag} pl_commit {} {} {} {mode} {} {}",
                        quote(path),
                        quote(owner),
                        quote(group),
                        quote(staged.temp(i, k).unwrap_or_default()),
                        content.sha256
                    );
                }
                st => step_shell(&mut s, &tag, st, plan)?,
            }
        }
        let _ = writeln!(s, "pl_ok_{i}=1\nprintf 'R\\t{i}\\tok\\n'");
        // Refused: its staged content never reaches the target.
        let temps: Vec<String> = staged.temps_of(i).map(quote).collect();
        if !temps.is_empty() {
            let _ = writeln!(s, "else\nrm -f -- {}", temps.join(" "));
        }
        s.push_str("fi\n");
    }
    if pending_rank.is_some() {
        flush_units(&mut s, &deferred, reload_needed, plan)?;
    }

    for (h, handler) in plan.handlers.iter().enumerate() {
        let because: Vec<String> = handler
            .because
            .iter()
            .filter_map(|b| {
                desired
                    .resources
                    .iter()
                    .position(|d| d.kind == b.kind && d.name == b.name)
                    .map(|i| format!("[ \"${{pl_ok_{i}:-0}}\" = 1 ]"))
            })
            .collect();
        let cond = if because.is_empty() {
            "true".to_string()
        } else {
            because.join(" || ")
        };
        let _ = writeln!(s, "# handler {h}\nif {cond}; then");
        for step in &handler.steps {
            step_shell(&mut s, &format!("X {h}"), step, plan)?;
        }
        let _ = writeln!(s, "printf 'X\\t{h}\\tok\\n'\nfi");
    }
    if !plan.domains.is_empty() {
        s.push_str("pl_do S 1 pl_as root\n");
    }
    write_content(
        &mut s,
        "S 1",
        &state_file,
        "",
        "",
        "0600",
        &Content::plain(plan.next_state.to_json()),
    );
    // The script ends the shell that runs it: when it runs in the shell holding the host lock,
    // the lock goes when the work is done, not before.
    s.push_str("printf 'A\\tdone\\n'\nexit 0\n}\npl_main\n");
    Ok(s)
}

/// The temp files written ahead of their resources: `(resource index, step index)` → path.
#[derive(Default)]
struct Staged {
    temps: std::collections::BTreeMap<(usize, usize), String>,
}

impl Staged {
    fn temp(&self, index: usize, step: usize) -> Option<&str> {
        self.temps.get(&(index, step)).map(String::as_str)
    }

    fn temps_of(&self, index: usize) -> impl Iterator<Item = &str> {
        self.temps
            .range((index, 0)..(index + 1, 0))
            .map(|(_, t)| t.as_str())
    }
}

/// Writes the contents of every file that the resources of `rank` replace to temp files next
/// to their targets, then checks them all against their hashes with one `sha256sum -c` and
/// fsyncs them with one `sync`: three processes per file become one (`base64 -d`), and each
/// resource is left with its compare-and-swap check and a rename. Folders are created here as
/// `pl_write` would (directories, of a lower rank, already exist).
fn stage_writes(
    s: &mut String,
    plan: &HostPlan,
    desired: &DesiredHost,
    rank: u8,
    staged: &mut Staged,
) -> Result<(), ApplyError> {
    let mut checks = String::new();
    let mut temps = Vec::new();
    for (r, d) in plan.resources.iter().zip(&desired.resources) {
        if d.spec.rank() != rank {
            continue;
        }
        for (k, step) in r.steps.iter().enumerate() {
            let Step::WriteFile {
                path,
                content,
                mode,
                ..
            } = step
            else {
                continue;
            };
            let c = plan
                .contents
                .get(&content.sha256)
                .ok_or_else(|| ApplyError::MissingContent(content.sha256.clone()))?;
            let temp = temp_for(path);
            let tag = format!("R {}", r.index);
            domain_shell(s, &tag, Some(path), plan);
            let _ = writeln!(
                s,
                "pl_do {tag} pl_stage {} {} {mode} <<'{EOF_MARK}'",
                quote(&temp),
                quote(path)
            );
            s.push_str(&base64_lines(c.bytes()));
            s.push_str(EOF_MARK);
            s.push('\n');
            // Files written as another user are checked one by one, as that user (pl_commit);
            // sha256sum -c reads a backslash at the start of a line as an escaped name.
            if !plan.domains.contains_key(path) {
                if !temp.contains('\\') {
                    let _ = writeln!(checks, "{}  {temp}", content.sha256);
                }
                temps.push(quote(&temp));
            }
            staged.temps.insert((r.index, k), temp);
        }
    }
    if temps.is_empty() {
        return Ok(());
    }
    if !plan.domains.is_empty() {
        let _ = writeln!(s, "pl_do G {rank} pl_as root");
    }
    if checks.lines().count() == temps.len() {
        let _ = writeln!(
            s,
            "pl_do G {rank} pl_seal {} <<'{EOF_MARK}'\n{checks}{EOF_MARK}",
            temps.join(" ")
        );
    } else {
        let _ = writeln!(s, "pl_do G {rank} pl_seal {} </dev/null", temps.join(" "));
    }
    Ok(())
}

fn flush_units(
    s: &mut String,
    deferred: &[(usize, &Step)],
    reload: bool,
    plan: &HostPlan,
) -> Result<(), ApplyError> {
    if reload {
        let _ = writeln!(s, "pl_do U 0 systemctl daemon-reload");
    }
    for (i, step) in deferred {
        let _ = writeln!(s, "if [ \"${{pl_ok_{i}:-0}}\" = 1 ]; then");
        step_shell(s, &format!("R {i}"), step, plan)?;
        s.push_str("fi\n");
    }
    Ok(())
}

/// What happened to one item of the plan.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "result", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing to do.
    Unchanged,
    /// Steps ran.
    Applied,
    /// Refused: the actual state changed since planning (hash found).
    Conflict(String),
    /// A step failed (tail of its output).
    Failed(String),
    /// Not reached: an earlier step failed.
    NotReached,
}

/// What happened on a host.
#[derive(Clone, Debug, Default)]
pub struct HostOutcome {
    /// Per resource plan.
    pub resources: Vec<Option<Outcome>>,
    /// Per prune.
    pub prune: Vec<Option<Outcome>>,
    /// Per handler.
    pub handlers: Vec<Option<Outcome>>,
    /// Failure outside a resource (state file, unit reload).
    pub other_failure: Option<String>,
    /// Warnings (e.g. a directory not removed because not empty).
    pub warnings: Vec<String>,
    /// The script ran to its end.
    pub complete: bool,
}

/// Reads the records an apply script printed.
pub fn parse_outcome(stdout: &str, plan: &HostPlan) -> HostOutcome {
    let mut o = HostOutcome {
        resources: vec![None; plan.resources.len()],
        prune: vec![None; plan.prune.len()],
        handlers: vec![None; plan.handlers.len()],
        ..Default::default()
    };
    for line in stdout.lines() {
        let f: Vec<&str> = line.splitn(4, '\t').collect();
        if f.len() < 2 {
            continue;
        }
        if f[0] == "A" && f[1] == "done" {
            o.complete = true;
            continue;
        }
        if f[0] == "W" {
            o.warnings
                .push(format!("{}: {}", f[1], f.get(2).unwrap_or(&"")));
            continue;
        }
        let Ok(i) = f[1].parse::<usize>() else {
            continue;
        };
        let outcome = match f.get(2).copied() {
            Some("ok") => Outcome::Applied,
            Some("conflict") => Outcome::Conflict(f.get(3).unwrap_or(&"").to_string()),
            Some("failed") => Outcome::Failed(crate::secrets::redact(f.get(3).unwrap_or(&""))),
            _ => continue,
        };
        let slot = match f[0] {
            "R" => plan
                .resources
                .iter()
                .position(|r| r.index == i)
                .and_then(|p| o.resources.get_mut(p)),
            "P" => o.prune.get_mut(i),
            "X" => o.handlers.get_mut(i),
            _ => {
                if let Outcome::Failed(m) = outcome {
                    o.other_failure = Some(m);
                }
                continue;
            }
        };
        if let Some(slot) = slot {
            *slot = Some(outcome);
        }
    }
    for (r, slot) in plan.resources.iter().zip(o.resources.iter_mut()) {
        if slot.is_none() {
            *slot = Some(if r.steps.is_empty() {
                Outcome::Unchanged
            } else {
                Outcome::NotReached
            });
        }
    }
    for slot in o.prune.iter_mut().chain(o.handlers.iter_mut()) {
        if slot.is_none() {
            *slot = Some(Outcome::NotReached);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// Runs the probe and apply libraries in a real `sh` with `body` after them.
    fn run(body: &str) -> (bool, String) {
        let state = tempfile::tempdir().unwrap();
        run_in(state.path(), body)
    }

    /// Same, with the host's state folder (backups go under it) at `state`.
    fn run_in(state: &std::path::Path, body: &str) -> (bool, String) {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "PL_STATE={}\n{}{LIB}PL_RUN=test\nPL_SEQ=0\nPL_ERR=$(mktemp)\npl_ids\n{body}",
                quote(&state.display().to_string()),
                crate::vocab::records::LIB
            ))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn write(
        path: &std::path::Path,
        owner: &str,
        group: &str,
        mode: &str,
        content: &[u8],
    ) -> String {
        let c = Content::plain(content.to_vec());
        let mut s = String::new();
        write_content(
            &mut s,
            "R 0",
            &path.display().to_string(),
            owner,
            group,
            mode,
            &c,
        );
        s
    }

    #[test]
    fn files_get_their_mode_owner_and_content_whatever_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let root = unsafe { libc::geteuid() } == 0;
        let cases: &[(&str, u32, &str, &str)] = &[
            ("plain", 0o640, "", ""),
            ("exec", 0o755, "", ""),
            ("private", 0o600, "", ""),
            ("setuid", 0o4750, "", ""),
            (
                "other-owner",
                0o644,
                if root { "nobody" } else { "" },
                if root { "nogroup" } else { "" },
            ),
        ];
        let mut body = String::new();
        for (name, mode, owner, group) in cases {
            let p = dir.path().join("sub/dir").join(name);
            body.push_str(&write(
                &p,
                owner,
                group,
                &format!("{mode:04o}"),
                name.as_bytes(),
            ));
        }
        body.push_str(&format!(
            "pl_do R 1 pl_mkdir {} '' '' 2750\n",
            quote(&dir.path().join("made/deep").display().to_string())
        ));
        let (ok, err) = run(&body);
        assert!(ok, "{err}");
        for (name, mode, owner, _) in cases {
            let p = dir.path().join("sub/dir").join(name);
            let md = std::fs::metadata(&p).unwrap();
            assert_eq!(md.permissions().mode() & 0o7777, *mode, "{name}");
            assert_eq!(std::fs::read(&p).unwrap(), name.as_bytes(), "{name}");
            if !owner.is_empty() {
                assert_ne!(md.uid(), 0, "{name} was not chowned");
            } else {
                assert_eq!(md.uid(), unsafe { libc::geteuid() }, "{name}");
            }
        }
        // Parents are world-traversable; the directory itself has exactly its mode.
        let parent = std::fs::metadata(dir.path().join("sub/dir")).unwrap();
        assert_eq!(parent.permissions().mode() & 0o777, 0o755);
        let made = std::fs::metadata(dir.path().join("made/deep")).unwrap();
        assert_eq!(made.permissions().mode() & 0o7777, 0o2750);
        // No temp file is left behind, and the shell's umask is back to 077.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("sub/dir"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".plumb-tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let (ok, err) = run(&format!(
            "{}[ \"$(umask)\" = 0077 ] || {{ echo \"umask is $(umask)\" >&2; exit 1; }}\n",
            write(&dir.path().join("u"), "", "", "0644", b"u")
        ));
        assert!(ok, "{err}");
    }

    #[test]
    fn a_write_whose_content_does_not_match_its_hash_leaves_the_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        std::fs::write(&target, "old").unwrap();
        let good = write(&target, "", "", "0644", b"new");
        // Same hash, other bytes: as if the transfer had been altered.
        let tampered = good.replacen(&base64_lines(b"new"), &base64_lines(b"evil"), 1);
        let (ok, _) = run(&tampered);
        assert!(!ok, "the write must fail");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["f"]);
    }

    #[test]
    fn replaced_files_keep_their_five_newest_versions() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let target = dir.path().join("etc/app.conf");
        let mut body = String::new();
        for i in 1..=7 {
            // Run ids sort by time.
            body.push_str(&format!("PL_RUN=2026010{i}T000000Z-aaaaaa\n"));
            body.push_str(&write(&target, "", "", "0644", format!("v{i}").as_bytes()));
        }
        let (ok, err) = run_in(&state, &body);
        assert!(ok, "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "v7");
        let backups = state.join("backup").join(target.strip_prefix("/").unwrap());
        let mut kept: Vec<String> = std::fs::read_dir(backups.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect();
        kept.sort();
        // v1 to v6 were replaced in turn: the five newest of them are kept.
        assert_eq!(kept, ["v2", "v3", "v4", "v5", "v6"]);
    }

    #[test]
    fn compare_and_swap_on_text_passes_only_on_the_exact_records() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let probe = format!("pl_path 3 {}\n", quote(&f.display().to_string()));
        // What the probe prints now, as the plan would have recorded it.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "PL_STATE=/nonexistent\n{}{probe}",
                crate::vocab::records::LIB
            ))
            .output()
            .unwrap();
        let now = String::from_utf8(out.stdout).unwrap();
        assert!(now.starts_with("3\tfile\t"), "{now}");
        let same = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "PL_STATE={}\n{}{LIB}PL_ERR=$(mktemp)\npl_cas() {{\n{probe}}}\nif pl_check_text 3 pl_cas {}; then echo SAME; fi\nif pl_check_text 3 pl_cas {}; then echo SAME; fi\n",
                quote(&dir.path().display().to_string()),
                crate::vocab::records::LIB,
                quote(&now),
                quote(&now.replace("\tfile\t", "\tfile\t1")),
            ))
            .output()
            .unwrap();
        let text = String::from_utf8(same.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "SAME");
        // A difference is a conflict, reported with the hash of what is there now.
        assert_eq!(
            lines[1],
            format!(
                "R\t3\tconflict\t{}",
                crate::model::desired::sha256_hex(now.as_bytes())
            )
        );
        assert_eq!(lines.len(), 2, "{text}");
    }
}
