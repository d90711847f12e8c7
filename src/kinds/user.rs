//! `User`: an OS user with pinned uid/gid, home, shell and supplementary groups.
//!
//! The seeds' `postgres` user is uid/gid 1001 so that files written by the container user are
//! owned by the same user on the VM. An existing user with another uid is a conflict, unless the
//! manifest sets `allow_renumber`, which then also re-owns that user's files.

use super::{CheckCx, Kind, Primitive, PrimitiveSpec, desired};
use crate::diag::Diagnostic;
use crate::kinds::Desired;
use crate::kinds::HostCx;
use crate::kinds::Manifest;
use crate::model::desired::Content;
use crate::model::values::{Presence, check_abs_path, is_valid_account_name};
use crate::shell::quote;
use crate::vocab::cx::PlanCx;
use crate::vocab::records::Records;
use crate::vocab::state::Managed;
use crate::vocab::step::{Action, Change, Planned, Step};
use serde::{Deserialize, Serialize};

/// A user. Its login name is the resource's `name`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// The login name (filled from the resource name).
    #[serde(default, skip_deserializing)]
    pub user: String,
    /// Numeric uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Primary group, by name (must exist or be declared as a Group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Supplementary groups (e.g. `docker`); the user is added to each and removed from no other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Home directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    /// Login shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// GECOS comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Create as a system user (when no uid is given).
    #[serde(default)]
    pub system: bool,
    /// Create the home directory.
    #[serde(default = "yes")]
    pub create_home: bool,
    /// Allow changing the uid of an existing user (and re-owning its files).
    #[serde(default)]
    pub allow_renumber: bool,
    /// Present or absent (absent users are removed only when declared absent).
    #[serde(default)]
    pub state: Presence,
}

fn yes() -> bool {
    true
}

impl UserSpec {
    /// The home directory `useradd` gives the user: `home`, or `/home/NAME` by default.
    pub fn home_path(&self) -> String {
        self.home
            .clone()
            .unwrap_or_else(|| format!("/home/{}", self.user))
    }
}

/// A parsed `getent passwd` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login.
    pub name: String,
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// GECOS.
    pub comment: String,
    /// Home.
    pub home: String,
    /// Shell.
    pub shell: String,
}

/// Parses `name:x:uid:gid:gecos:home:shell`.
pub fn parse_passwd(line: &str) -> Option<PasswdEntry> {
    let f: Vec<&str> = line.split(':').collect();
    if f.len() != 7 {
        return None;
    }
    Some(PasswdEntry {
        name: f[0].to_string(),
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        comment: f[4].to_string(),
        home: f[5].to_string(),
        shell: f[6].to_string(),
    })
}

impl Kind for UserSpec {
    fn default_name(&self) -> Option<String> {
        None
    }

    fn check(&self, cx: &mut CheckCx) {
        let name = cx.manifest.name.clone();
        if !is_valid_account_name(&name) {
            cx.error(
                "name",
                format!("`{name}` is not a valid user name"),
                Some("use lowercase letters, digits, `_` and `-`, starting with a letter".into()),
            );
        }
        if let Some(g) = &self.group {
            cx.account("group", g);
        }
        for (i, g) in self.groups.iter().enumerate() {
            cx.account(&format!("groups[{i}]"), g);
        }
        if let Some(h) = &self.home {
            cx.abs_path("home", h, &[]);
        }
        if let Some(s) = &self.shell
            && let Err(e) = check_abs_path(s, &[])
        {
            cx.error("shell", e.to_string(), None);
        }
        if let Some(c) = &self.comment
            && c.contains(':')
        {
            cx.error(
                "comment",
                format!("the comment `{c}` holds a `:`, which separates the fields of /etc/passwd"),
                Some("remove the `:` (commas separate the GECOS subfields)".into()),
            );
        }
    }

    fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic> {
        let mut spec = self.clone();
        spec.user = m.name.clone();
        Ok(vec![desired(
            m,
            cx,
            m.name.clone(),
            PrimitiveSpec::User(spec),
        )])
    }
}

impl Primitive for UserSpec {
    fn shell() -> &'static str {
        include_str!("user.sh")
    }

    /// Users go only with `--prune-users`.
    fn prune(m: &Managed, cx: &PlanCx) -> Vec<Step> {
        if cx.prune_users {
            vec![del_step(&m.name)]
        } else {
            Vec::new()
        }
    }

    fn contents(&self) -> Vec<&Content> {
        Vec::new()
    }

    fn paths(&self) -> Vec<String> {
        Vec::new()
    }

    fn probe(&self, index: usize, out: &mut String) {
        out.push_str(&format!("pl_user {index} {}\n", quote(&self.user)));
    }

    fn plan(&self, _index: usize, actual: Records, _cx: &PlanCx) -> Planned {
        let mut p = Planned::default();
        let rec = actual.get("").unwrap_or(&[]);
        let present = rec.first().map(String::as_str) == Some("present");
        match (self.state, present) {
            (Presence::Present, false) => {
                p.action = Some(Action::Create);
                p.changes.push(Change::new(
                    "user",
                    None,
                    Some(match self.uid {
                        Some(u) => format!("{} (uid {u})", self.user),
                        None => self.user.clone(),
                    }),
                ));
                p.steps.push(self.add_step());
            }
            (Presence::Present, true) => {
                // The passwd entry, then `id -Gn` (the primary group first).
                let text = rec
                    .get(1)
                    .and_then(|b| crate::vocab::records::decode_text(b))
                    .unwrap_or_default();
                let (passwd, group_line) = text.split_once('\n').unwrap_or((&text, ""));
                let Some(e) = parse_passwd(passwd).filter(|e| e.name == self.user) else {
                    p.error = Some("unreadable passwd entry".into());
                    return p;
                };
                let groups: Vec<&str> = group_line.split(' ').filter(|s| !s.is_empty()).collect();
                if let Some(want) = self.uid.filter(|w| *w != e.uid) {
                    if self.allow_renumber {
                        p.changes.push(Change::new(
                            "uid",
                            Some(e.uid.to_string()),
                            Some(want.to_string()),
                        ));
                        p.steps.push(Step::exec([
                            "usermod".to_string(),
                            "-u".into(),
                            want.to_string(),
                            "--".into(),
                            self.user.clone(),
                        ]));
                        p.steps.push(Step::exec([
                            "pl_reown_uid".to_string(),
                            e.uid.to_string(),
                            want.to_string(),
                        ]));
                    } else {
                        p.error = Some(format!(
                            "user `{}` exists with uid {}, but the manifest pins uid {want}; set `allow_renumber: true` to change it (its files are re-owned), or change the manifest",
                            self.user, e.uid
                        ));
                        return p;
                    }
                }
                let mut m = (None, Vec::new(), None, None, None);
                if let Some(g) = &self.group
                    && groups.first() != Some(&g.as_str())
                    && g.parse::<u32>().ok() != Some(e.gid)
                {
                    p.changes.push(Change::new(
                        "group",
                        groups.first().map(|s| s.to_string()),
                        Some(g.clone()),
                    ));
                    m.0 = Some(g.clone());
                }
                for g in &self.groups {
                    if !groups.contains(&g.as_str()) {
                        p.changes
                            .push(Change::new("groups", None, Some(format!("+{g}"))));
                        m.1.push(g.clone());
                    }
                }
                if let Some(h) = self.home.as_ref().filter(|h| **h != e.home) {
                    p.changes
                        .push(Change::new("home", Some(e.home.clone()), Some(h.clone())));
                    m.2 = Some(h.clone());
                }
                if let Some(s) = self.shell.as_ref().filter(|s| **s != e.shell) {
                    p.changes
                        .push(Change::new("shell", Some(e.shell.clone()), Some(s.clone())));
                    m.3 = Some(s.clone());
                }
                if let Some(c) = self.comment.as_ref().filter(|c| **c != e.comment) {
                    p.changes.push(Change::new(
                        "comment",
                        Some(e.comment.clone()),
                        Some(c.clone()),
                    ));
                    m.4 = Some(c.clone());
                }
                if m != (None, Vec::new(), None, None, None) {
                    p.steps.push(self.mod_step(m));
                }
            }
            (Presence::Absent, true) => {
                p.action = Some(Action::Delete);
                p.changes
                    .push(Change::new("user", Some(self.user.clone()), None));
                p.steps.push(del_step(&self.user));
            }
            (Presence::Absent, false) => {}
        }
        p
    }
}

/// What `usermod` changes, besides the uid.
type UserChanges = (
    Option<String>,
    Vec<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl UserSpec {
    /// `useradd` with the pinned uid, groups, home, shell and comment.
    fn add_step(&self) -> Step {
        let mut argv = vec!["useradd".to_string()];
        if let Some(u) = self.uid {
            argv.extend(["-u".into(), u.to_string()]);
        } else if self.system {
            argv.push("-r".into());
        }
        if let Some(g) = &self.group {
            argv.extend(["-g".into(), g.clone()]);
        }
        if !self.groups.is_empty() {
            argv.extend(["-G".into(), self.groups.join(",")]);
        }
        if let Some(h) = &self.home {
            argv.extend(["-d".into(), h.clone()]);
        }
        if let Some(sh) = &self.shell {
            argv.extend(["-s".into(), sh.clone()]);
        }
        if let Some(c) = &self.comment {
            argv.extend(["-c".into(), c.clone()]);
        }
        argv.push(if self.create_home { "-m" } else { "-M" }.into());
        argv.extend(["--".into(), self.user.clone()]);
        Step::exec(argv)
    }

    /// `usermod` for the attributes that differ.
    fn mod_step(&self, m: UserChanges) -> Step {
        let (group, add_groups, home, shell, comment) = m;
        let mut argv = vec!["usermod".to_string()];
        if let Some(g) = group {
            argv.extend(["-g".into(), g]);
        }
        if !add_groups.is_empty() {
            argv.extend(["-a".into(), "-G".into(), add_groups.join(",")]);
        }
        if let Some(h) = home {
            argv.extend(["-d".into(), h]);
        }
        if let Some(sh) = shell {
            argv.extend(["-s".into(), sh]);
        }
        if let Some(c) = comment {
            argv.extend(["-c".into(), c]);
        }
        argv.extend(["--".into(), self.user.clone()]);
        Step::exec(argv)
    }
}

fn del_step(name: &str) -> Step {
    Step::exec(["userdel", "--", name])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{b64, managed, plan_cx, records};

    fn want() -> UserSpec {
        UserSpec {
            user: "postgres".into(),
            uid: Some(1001),
            group: Some("postgres".into()),
            groups: vec!["docker".into()],
            home: Some("/var/lib/postgres".into()),
            shell: Some("/bin/bash".into()),
            comment: None,
            system: false,
            create_home: true,
            allow_renumber: false,
            state: Presence::Present,
        }
    }

    /// What `pl_user` prints for a user: its passwd entry, then `id -Gn`, base64.
    fn present(passwd: &str, groups: &str) -> String {
        format!("present\t{}", b64(&format!("{passwd}\n{groups}\n")))
    }

    const ENTRY: &str = "postgres:x:1001:1001::/var/lib/postgres:/bin/bash";

    fn plan(u: &UserSpec, record: &str) -> Planned {
        u.plan(0, records(&format!("0\t{record}\n")).of(0), &plan_cx())
    }

    #[test]
    fn a_user_in_sync_plans_nothing() {
        let p = plan(&want(), &present(ENTRY, "postgres docker"));
        assert!(p.steps.is_empty() && p.changes.is_empty() && p.error.is_none());
    }

    #[test]
    fn an_absent_user_is_added_with_its_pinned_ids() {
        let p = plan(&want(), "absent");
        assert_eq!(p.action, Some(Action::Create));
        assert_eq!(
            p.steps,
            [Step::exec([
                "useradd",
                "-u",
                "1001",
                "-g",
                "postgres",
                "-G",
                "docker",
                "-d",
                "/var/lib/postgres",
                "-s",
                "/bin/bash",
                "-m",
                "--",
                "postgres"
            ])]
        );
    }

    #[test]
    fn what_differs_is_changed_by_one_usermod() {
        let other = "postgres:x:1001:1001:DB:/home/postgres:/bin/sh";
        let p = plan(&want(), &present(other, "postgres"));
        let fields: Vec<&str> = p.changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["groups", "home", "shell"]);
        assert_eq!(
            p.steps,
            [Step::exec([
                "usermod",
                "-a",
                "-G",
                "docker",
                "-d",
                "/var/lib/postgres",
                "-s",
                "/bin/bash",
                "--",
                "postgres"
            ])]
        );
    }

    #[test]
    fn another_uid_is_an_error_unless_renumbering_is_allowed() {
        let moved = "postgres:x:999:999::/var/lib/postgres:/bin/bash";
        let p = plan(&want(), &present(moved, "postgres docker"));
        assert!(p.steps.is_empty());
        assert!(p.error.unwrap().contains("allow_renumber"));
        let mut u = want();
        u.allow_renumber = true;
        let p = plan(&u, &present(moved, "postgres docker"));
        assert_eq!(
            p.steps,
            [
                Step::exec(["usermod", "-u", "1001", "--", "postgres"]),
                Step::exec(["pl_reown_uid", "999", "1001"]),
            ]
        );
    }

    #[test]
    fn an_absent_user_is_deleted_and_a_pruned_one_only_when_asked() {
        let mut u = want();
        u.state = Presence::Absent;
        let p = plan(&u, &present(ENTRY, "postgres"));
        assert_eq!(p.action, Some(Action::Delete));
        assert_eq!(p.steps, [Step::exec(["userdel", "--", "postgres"])]);
        assert!(plan(&u, "absent").steps.is_empty());
        let m = managed("User", "postgres", &[]);
        assert!(UserSpec::prune(&m, &plan_cx()).is_empty());
        let mut cx = plan_cx();
        cx.prune_users = true;
        assert_eq!(
            UserSpec::prune(&m, &cx),
            [Step::exec(["userdel", "--", "postgres"])]
        );
    }

    #[test]
    fn hostile_records_are_errors_never_steps() {
        for record in [
            // Not base64.
            "present\t***".to_string(),
            // No entry at all.
            "present".to_string(),
            // Another user's entry (a name with a newline could not make it match).
            present("root:x:0:0:root:/root:/bin/bash", "root"),
            present("postgres\nroot:x:0:0:root:/root:/bin/bash", "root"),
            // Too few or too many fields, a uid that is not a number.
            present("postgres:x:1001:1001:/var/lib/postgres:/bin/bash", ""),
            present("postgres:x:1001:1001::/home:/bin/sh:extra", ""),
            present("postgres:x:-1:1001::/var/lib/postgres:/bin/bash", ""),
        ] {
            let p = plan(&want(), &record);
            assert!(p.steps.is_empty(), "{record}: {:?}", p.steps);
            assert!(
                p.error.as_deref() == Some("unreadable passwd entry"),
                "{record}: {p:?}"
            );
        }
    }
}
