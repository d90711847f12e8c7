//! Planning a whole host from probe record text, without a host: resource plans, drift,
//! handlers, pruning and its guards, the next host state.

use super::*;
use crate::kinds::command::CommandSpec;
use crate::kinds::directory::DirectorySpec;
use crate::kinds::file::FileState;
use crate::kinds::systemd_unit::UnitState;
use crate::kinds::user::UserSpec;
use crate::model::values::{FileMode, Presence};
use crate::testutil::{OTHER_SHA, desired, file_rec, host, managed, plan_cx, probe_output};
use crate::vocab::step::Step;

fn file(path: &str, text: &str) -> Desired {
    desired(
        path,
        PrimitiveSpec::File(FileState::new(
            path,
            "root",
            "root",
            0o644,
            Content::plain(text),
        )),
    )
}

fn unit(name: &str) -> Desired {
    desired(
        name,
        PrimitiveSpec::SystemdUnit(UnitState::new(
            name,
            Content::plain("[Service]\nExecStart=/bin/app\n"),
            Some(true),
            Some(true),
        )),
    )
}

/// A record of a file holding `text` with the mode and owner a File declares by default.
fn same(text: &str) -> String {
    file_rec(
        "644",
        "root",
        "root",
        text.len() as u64,
        &Content::plain(text).sha256(),
    )
}

/// Plans `h` from the resource records of `body` (every folder on the way reported as a
/// root-owned folder, as on a fresh VM), against what the host state says plumb managed.
fn plan_text(h: &DesiredHost, body: &str, previous: &HostState, cx: &PlanCx) -> HostPlan {
    let mut dirs = crate::probe::host_dirs(h);
    dirs.extend(prune_dirs(h, previous));
    let mut text = body.to_string();
    for i in 0..dirs.len() {
        text.push_str(&format!("A\t{i}\tdir\t755 0 0 root root\n"));
    }
    let records =
        probe_output(&text, h.resources.len(), dirs.len()).unwrap_or_else(|e| panic!("{e}"));
    let mut cx = cx.clone();
    cx.dirs = records.dir_states(&dirs);
    plan_host(h, &records, previous, &cx)
}

fn plan(h: &DesiredHost, body: &str) -> HostPlan {
    plan_text(h, body, &HostState::default(), &plan_cx())
}

#[test]
fn a_host_in_sync_has_nothing_to_do() {
    let h = host(vec![file("/etc/a", "a\n"), file("/etc/b", "b\n")]);
    let p = plan(&h, &format!("0\t{}\n1\t{}\n", same("a\n"), same("b\n")));
    assert!(!p.has_changes(), "{p:#?}");
    assert!(p.resources.iter().all(|r| r.action == Action::None));
    assert_eq!(p.refusal(), None);
    assert_eq!(p.contents.len(), 2);
}

#[test]
fn each_resource_gets_its_action_and_steps() {
    let h = host(vec![
        file("/etc/a", "a\n"),
        file("/etc/b", "b\n"),
        desired(
            "/srv/d",
            PrimitiveSpec::Directory(DirectorySpec {
                path: "/srv/d".into(),
                owner: "root".into(),
                group: "root".into(),
                mode: FileMode(0o755),
                state: Presence::Present,
            }),
        ),
    ]);
    // In rank order: the directory first, then the files.
    assert_eq!(h.resources[0].kind, "Directory");
    let body = format!(
        "0\tabsent\n1\tabsent\n2\t{}\n",
        file_rec("644", "root", "root", 1, OTHER_SHA)
    );
    let p = plan(&h, &body);
    let actions: Vec<Action> = p.resources.iter().map(|r| r.action).collect();
    assert_eq!(actions, [Action::Create, Action::Create, Action::Update]);
    assert!(matches!(p.resources[0].steps[..], [Step::Mkdir { .. }]));
    assert!(matches!(p.resources[2].steps[..], [Step::WriteFile { .. }]));
    assert!(p.has_changes());
    // The hash compare-and-swap checks covers exactly the record planned from.
    assert_eq!(
        p.resources[2].actual_text.as_deref(),
        Some(format!("2\t{}\n", file_rec("644", "root", "root", 1, OTHER_SHA)).as_str())
    );
}

#[test]
fn a_resource_the_probe_said_nothing_of_is_an_error_that_refuses_the_host() {
    let h = host(vec![file("/etc/a", "a\n"), file("/etc/b", "b\n")]);
    let p = plan(&h, "0\tabsent\n");
    assert_eq!(p.resources[1].action, Action::Error);
    assert!(p.resources[1].steps.is_empty());
    assert_eq!(
        p.refusal().as_deref(),
        Some("File//etc/b cannot be converged: the probe returned no record for this resource")
    );
    // A planner's error refuses the host the same way.
    let p = plan(&h, "0\tabsent\n1\tdir\t755 0 0 root root\n");
    assert!(p.refusal().unwrap().contains("is a directory on the host"));
}

#[test]
fn drift_under_detect_is_reported_not_repaired() {
    let mut f = file("/etc/a", "a\n");
    f.drift = DriftPolicy::Detect;
    let p = plan(&host(vec![f]), "0\tabsent\n");
    assert_eq!(p.resources[0].action, Action::Drift);
    assert!(p.resources[0].steps.is_empty());
    assert!(p.has_drift() && !p.has_changes());
}

#[test]
fn a_change_notifies_its_handlers_once_and_nothing_else_does() {
    let mut conf = file("/etc/app.conf", "v2\n");
    conf.notify = vec![ResourceRef {
        kind: "SystemdUnit".into(),
        name: "app.service".into(),
    }];
    let h = host(vec![conf, unit("app.service")]);
    let unit_file = same("[Service]\nExecStart=/bin/app\n");
    let unit_body = format!("1.file\t{unit_file}\n1.enabled\tenabled\n1.active\tactive\n");
    let p = plan(&h, &format!("0\t{}\n{unit_body}", same("v1\n")));
    assert_eq!(p.handlers.len(), 1);
    assert_eq!(p.handlers[0].target.name, "app.service");
    assert_eq!(p.handlers[0].because[0].name, "/etc/app.conf");
    assert!(matches!(&p.handlers[0].steps[..], [Step::Exec { argv, .. }] if argv[1] == "restart"));
    let p = plan(&h, &format!("0\t{}\n{unit_body}", same("v2\n")));
    assert!(p.handlers.is_empty() && !p.has_changes());
}

#[test]
fn what_left_the_repo_is_pruned_through_its_kind() {
    let h = host(vec![file("/etc/kept", "k\n")]);
    let mut gone_unit = managed(
        "SystemdUnit",
        "old.service",
        &["/etc/systemd/system/old.service"],
    );
    gone_unit.unit = Some("old.service".into());
    let previous = HostState {
        version: 1,
        commit: None,
        resources: vec![
            managed("File", "/etc/kept", &["/etc/kept"]),
            managed("File", "/etc/old.conf", &["/etc/old.conf"]),
            managed("Directory", "/srv/old", &["/srv/old"]),
            gone_unit,
            // Left as they are: packages, commands, users without --prune-users, and a kind
            // this plumb does not know (a state written by another version).
            managed("Package", "tools", &[]),
            managed("Command", "initdb", &[]),
            managed("User", "app", &[]),
            managed("Widget", "w", &["/etc/w"]),
        ],
    };
    let body = format!("0\t{}\n", same("k\n"));
    let p = plan_text(&h, &body, &previous, &plan_cx());
    let pruned: Vec<(&str, &[Step])> = p
        .prune
        .iter()
        .map(|x| (x.managed.name.as_str(), x.steps.as_slice()))
        .collect();
    assert_eq!(pruned.len(), 3, "{pruned:#?}");
    assert_eq!(
        pruned[0],
        (
            "/etc/old.conf",
            &[Step::Remove {
                path: "/etc/old.conf".into()
            }][..]
        )
    );
    assert_eq!(
        pruned[1],
        (
            "/srv/old",
            &[Step::RemoveDir {
                path: "/srv/old".into()
            }][..]
        )
    );
    assert_eq!(pruned[2].0, "old.service");
    assert_eq!(pruned[2].1.len(), 4);
    assert!(p.has_changes() && p.refusal().is_none());
    // Users and groups go with --prune-users.
    let mut cx = plan_cx();
    cx.prune_users = true;
    let p = plan_text(&h, &body, &previous, &cx);
    assert!(
        p.prune
            .iter()
            .any(|x| x.managed.name == "app" && x.steps == [Step::exec(["userdel", "--", "app"])])
    );
    // The mass-prune guard counts every resource that left, pruned by its kind or not.
    let why = mass_prune(&previous, &p).unwrap();
    assert!(
        why.starts_with("this converge would remove 7 of the 8 resources"),
        "{why}"
    );
    assert!(why.contains("--allow-mass-prune"));
}

#[test]
fn the_mass_prune_guard_needs_more_than_half_and_at_least_two() {
    let h = host(vec![file("/etc/a", "a\n"), file("/etc/b", "b\n")]);
    let p = plan(&h, &format!("0\t{}\n1\t{}\n", same("a\n"), same("b\n")));
    let state = |names: &[&str]| HostState {
        version: 1,
        commit: None,
        resources: names.iter().map(|n| managed("File", n, &[n])).collect(),
    };
    // One of one: a single removal is never a mass prune.
    assert_eq!(mass_prune(&state(&["/etc/x"]), &p), None);
    // Two of four: half, not more.
    assert_eq!(
        mass_prune(&state(&["/etc/a", "/etc/b", "/etc/x", "/etc/y"]), &p),
        None
    );
    // Two of three.
    assert!(mass_prune(&state(&["/etc/a", "/etc/x", "/etc/y"]), &p).is_some());
}

#[test]
fn a_removal_from_a_folder_another_user_writes_is_done_as_that_user_or_refused() {
    let h = host(vec![file("/etc/a", "a\n")]);
    let previous = HostState {
        version: 1,
        commit: None,
        resources: vec![
            managed("File", "/home/app/x", &["/home/app/x"]),
            managed("SystemdUnit", "x.service", &["/home/app/x.service"]),
        ],
    };
    let mut dirs = crate::probe::host_dirs(&h);
    dirs.extend(prune_dirs(&h, &previous));
    assert_eq!(dirs, ["/", "/etc", "/home", "/home/app"]);
    let mut body = format!("0\t{}\n", same("a\n"));
    for (i, d) in dirs.iter().enumerate() {
        let owner = if d == "/home/app" {
            "755 1001 1001 app app"
        } else {
            "755 0 0 root root"
        };
        body.push_str(&format!("A\t{i}\tdir\t{owner}\n"));
    }
    let records = probe_output(&body, 1, dirs.len()).unwrap();
    let mut cx = plan_cx();
    cx.dirs = records.dir_states(&dirs);
    let p = plan_host(&h, &records, &previous, &cx);
    assert_eq!(
        p.domains.get("/home/app/x").map(String::as_str),
        Some("1001")
    );
    let unit = p
        .prune
        .iter()
        .find(|x| x.managed.kind == "SystemdUnit")
        .unwrap();
    assert!(
        unit.error
            .as_deref()
            .unwrap()
            .contains("will not remove a SystemdUnit")
    );
    assert!(unit.steps.is_empty());
    assert!(
        p.refusal()
            .unwrap()
            .contains("(removed from the repo) cannot be removed")
    );
}

#[test]
fn the_next_state_remembers_what_pruning_will_need() {
    let secret = FileState::new("/etc/s", "root", "root", 0o600, Content::sensitive("pw"));
    let h = host(vec![
        desired("/etc/s", PrimitiveSpec::File(secret)),
        unit("app.service"),
        desired(
            "app",
            PrimitiveSpec::User(UserSpec {
                user: "app".into(),
                uid: None,
                group: None,
                groups: vec![],
                home: None,
                shell: None,
                comment: None,
                system: true,
                create_home: false,
                allow_renumber: false,
                state: Presence::Present,
            }),
        ),
        desired(
            "c",
            PrimitiveSpec::Command(CommandSpec {
                run: "true".into(),
                creates: Some("/x".into()),
                unless: None,
                onlyif: None,
                refresh_only: false,
                user: None,
                cwd: None,
                env: Default::default(),
                timeout: 1,
                wait_for: None,
                wait_timeout: 1,
            }),
        ),
    ]);
    let s = next_state(&h);
    assert_eq!(s.version, 1);
    let by_kind = |k: &str| s.resources.iter().find(|m| m.kind == k).unwrap();
    assert_eq!(by_kind("User").paths, Vec::<String>::new());
    let f = by_kind("File");
    assert!(f.sensitive && f.paths == ["/etc/s"]);
    assert_eq!(by_kind("SystemdUnit").unit.as_deref(), Some("app.service"));
    assert!(!by_kind("Command").sensitive);
    // What plumb last wrote from a secret is never shown in a diff.
    let h = host(vec![file("/etc/s", "new\n")]);
    let p = plan_text(&h, "0\tabsent\n", &s, &plan_cx());
    assert!(p.resources[0].diffs[0].old_sensitive);
}

/// Every primitive kind of the registry, rendered from a manifest: what pruning asks of a kind
/// by name agrees with what the kind says of its resources. A new kind fails this test until
/// the manifest below has a resource of it.
#[test]
fn every_primitive_kind_says_the_same_of_its_paths_by_name_and_by_resource() {
    use crate::testutil::{render, repo};
    let dir = repo(&[(
        "manifests/all.yaml",
        "kind: File\nhosts: host:pg1\npath: /etc/a\ncontent: a\n---\nkind: Directory\nhosts: host:pg1\npath: /etc/d\n---\nkind: User\nname: app\nhosts: host:pg1\n---\nkind: Group\nname: app\nhosts: host:pg1\n---\nkind: Package\nname: p\nhosts: host:pg1\npackages: [curl]\n---\nkind: Symlink\nhosts: host:pg1\npath: /etc/l\ntarget: /etc/a\n---\nkind: SystemdUnit\nname: x.service\nhosts: host:pg1\ncontent: \"[Service]\\nExecStart=/bin/true\\n\"\n---\nkind: ComposeStack\nname: s\nhosts: host:pg1\ndir: /opt/s\ncontent: \"services: {}\\n\"\n---\nkind: Command\nname: c\nhosts: host:pg1\nrun: \"true\"\ncreates: /etc/a\n---\nkind: Certificate\nhosts: host:pg1\nca: pg-ca\ncert_path: /etc/pg.crt\nkey_path: /etc/pg.key\n",
    )]);
    let h = render(&dir, "pg1");
    let mut seen = std::collections::BTreeSet::new();
    for d in &h.resources {
        seen.insert(d.kind);
        assert_eq!(
            crate::kinds::removed_as_owner(d.kind),
            d.spec.engine().owner().is_some(),
            "{}",
            d.kind
        );
        // Every registered kind prunes through its contract (an unknown one does not).
        assert!(crate::kinds::prune_steps(&managed(d.kind, &d.name, &[]), &plan_cx()).is_some());
    }
    let mut primitives: Vec<&str> = crate::kinds::KIND_NAMES
        .iter()
        .copied()
        .filter(|k| {
            !matches!(
                *k,
                "CertificateAuthority" | "PostgresCluster" | "BackupRepo"
            )
        })
        .collect();
    primitives.sort();
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        primitives,
        "every primitive kind of the registry has a resource in this test's manifest: add one for a new kind"
    );
    assert!(crate::kinds::prune_steps(&managed("Widget", "w", &[]), &plan_cx()).is_none());
    assert!(!crate::kinds::removed_as_owner("Widget"));
}

// Masked diffs of files rendered from secrets.

/// Settings around secrets: one through `json_encode`, one through `upper`, one on several
/// lines, and a secret whose value is also ordinary text of the file (`user:`).
const MASKED_TEMPLATE: &str = "image: {{ image }}\nshared_buffers: 128MB\npassword: {{ secret(name=\"su\") | json_encode }}\nshout: {{ secret(name=\"app\") | upper }}\nkey: {{ secret(name=\"api\") }}\nuser: app-user-name\n";

const OLD_SU: &str = "old-superuser-pw-1";
const NEW_SU: &str = "new-superuser-pw-2";
const APP: &str = "app-user-name";
const KEY: &str = "-----BEGIN KEY-----\nkey-line-one-abc\nkey-line-two-def\n-----END KEY-----";

/// Every secret value (and what a filter made of one) that must appear in no output.
const LEAKS: &[&str] = &[
    OLD_SU,
    NEW_SU,
    APP,
    "APP-USER-NAME",
    "key-line-one-abc",
    "key-line-two-def",
    "BEGIN KEY",
];

fn assert_no_secret(what: &str, text: &str) {
    for v in LEAKS {
        assert!(!text.contains(v), "{what} shows `{v}`:\n{text}");
    }
}

/// Host pg1 of a repo whose File `/etc/app.yaml` renders [`MASKED_TEMPLATE`] with `image` and
/// the superuser password `su`.
fn masked_host(image: &str, su: &str) -> DesiredHost {
    let manifest = format!(
        "kind: File\nhosts: host:pg1\npath: /etc/app.yaml\nmode: \"0600\"\ntemplate: app.tera\nvars: {{ image: \"{image}\" }}\n"
    );
    let (_dir, repo) = crate::testutil::repo_with_secrets(
        &[
            ("manifests/app.yaml", &manifest),
            ("templates/app.tera", MASKED_TEMPLATE),
        ],
        &[("su", su), ("app", APP), ("api", KEY)],
    );
    let h = repo.inventory.host("pg1").unwrap();
    let mut h = crate::render::render_host(&repo, h).unwrap_or_else(|e| panic!("{e}"));
    h.resources.retain(|d| d.kind == "File");
    h
}

fn content_of(h: &DesiredHost) -> Content {
    h.resources[0].spec.contents()[0].clone()
}

/// The plan of `h` against a host whose `/etc/app.yaml` hashes to `host_sha`, with the masked
/// diffs filled in from `previous`.
fn masked_plan(h: &DesiredHost, host_sha: &str, previous: &HostState) -> HostPlan {
    let rec = file_rec("600", "root", "root", 10, host_sha);
    let mut p = plan_text(h, &format!("0\t{rec}\n"), previous, &plan_cx());
    masked_diffs(&mut p, previous);
    p
}

fn report_of(p: &HostPlan) -> crate::report::RunReport {
    crate::report::RunReport {
        run_id: "r".into(),
        commit: None,
        dry_run: true,
        hosts: vec![crate::report::HostRun {
            host: "pg1".into(),
            plan: Some(p.clone()),
            outcome: None,
            error: None,
            duration: std::time::Duration::from_millis(1),
        }],
        clusters: vec![],
        duration: std::time::Duration::from_millis(1),
        timed_out: false,
    }
}

/// Everything a run writes of a plan: the diff texts, the plan file's JSON, the host state
/// (unredacted: the checks must not lean on redaction), the human and JSON reports.
fn all_output(p: &HostPlan) -> String {
    let r = report_of(p);
    format!(
        "{}\n{}\n{}\n{}\n{}",
        p.resources
            .iter()
            .flat_map(|r| &r.diffs)
            .filter_map(|d| d.text.clone())
            .collect::<Vec<_>>()
            .join("\n"),
        serde_json::to_string(&p.resources).unwrap(),
        p.next_state.to_json(),
        r.to_human(false),
        r.to_json()
    )
}

#[test]
fn a_file_from_secrets_renders_a_masked_text_free_of_every_value() {
    let h = masked_host("app:1", OLD_SU);
    let c = content_of(&h);
    assert!(c.sensitive);
    let real = String::from_utf8(c.bytes().to_vec()).unwrap();
    assert!(real.contains(OLD_SU) && real.contains("APP-USER-NAME") && real.contains(KEY));
    let masked = c.masked_text().expect("a masked text");
    assert_eq!(
        masked,
        "image: app:1\nshared_buffers: 128MB\npassword: \"<secret:su>\"\nshout: <SECRET:APP>\nkey: <secret:api>\n\
         user: <secret:app>\n"
    );
    assert_no_secret("the masked text", masked);
    // The host state keeps it, tied to the hash of the real bytes, and nothing else of them.
    let s = next_state(&h);
    assert_eq!(s.resources[0].masked.len(), 1);
    assert_eq!(s.resources[0].masked[0].sha256, c.sha256());
    assert_no_secret("the host state", &s.to_json());
    // Debug and Serialize of the content still show nothing of it.
    assert_no_secret("Debug", &format!("{c:?}"));
    assert_no_secret("Serialize", &serde_json::to_string(&c).unwrap());
}

/// The operator changes `image:` and rotates the superuser password in one commit: the diff
/// shows the image line, the password line is the same placeholder on both sides, and neither
/// password appears anywhere.
#[test]
fn a_changed_line_of_a_file_from_secrets_is_a_masked_diff_and_no_value_leaks() {
    let before = masked_host("app:1", OLD_SU);
    let state = next_state(&before);
    let written = content_of(&before).sha256();
    let after = masked_host("app:2", NEW_SU);
    let p = masked_plan(&after, &written, &state);
    let d = &p.resources[0].diffs[0];
    assert!(d.masked && d.old_not_shown.is_none(), "{d:?}");
    let text = d.text.as_deref().unwrap();
    assert!(
        text.contains("--- a/etc/app.yaml (secrets masked)"),
        "{text}"
    );
    assert!(
        text.contains("+++ b/etc/app.yaml (secrets masked)"),
        "{text}"
    );
    assert!(text.contains("-image: app:1\n+image: app:2\n"), "{text}");
    assert!(text.contains(" password: \"<secret:su>\"\n"), "{text}");
    let out = all_output(&p);
    assert_no_secret("the run's output", &out);
    let human = report_of(&p).to_human(false);
    assert!(human.contains("+image: app:2"), "{human}");
    assert!(!human.contains("sensitive content changed"), "{human}");
    let json: serde_json::Value = serde_json::from_str(&report_of(&p).to_json()).unwrap();
    let jd = &json["hosts"][0]["resources"][0]["diffs"][0];
    assert_eq!(jd["masked"], true);
    assert!(jd["text"].as_str().unwrap().contains("+image: app:2"));
}

#[test]
fn a_rotated_secret_alone_says_only_secret_values_changed() {
    let before = masked_host("app:1", OLD_SU);
    let state = next_state(&before);
    let p = masked_plan(
        &masked_host("app:1", NEW_SU),
        &content_of(&before).sha256(),
        &state,
    );
    let d = &p.resources[0].diffs[0];
    assert!(d.masked && d.text.as_deref() == Some(""), "{d:?}");
    let human = report_of(&p).to_human(false);
    assert!(
        human.contains("/etc/app.yaml: only secret values changed (secrets masked) (sha256 "),
        "{human}"
    );
    assert_no_secret("the run's output", &all_output(&p));
}

/// The old side comes only from the host state, and only while the host's file is what plumb
/// wrote: changed on the host, or written by an older plumb, the diff shows the new content
/// and says why; the host's bytes (an old password, maybe) are never read.
#[test]
fn without_a_kept_copy_of_what_the_host_has_only_the_new_content_is_shown() {
    let before = masked_host("app:1", OLD_SU);
    let after = masked_host("app:2", NEW_SU);
    for previous in [next_state(&before), HostState::default()] {
        let p = masked_plan(&after, OTHER_SHA, &previous);
        let d = &p.resources[0].diffs[0];
        assert!(d.masked, "{d:?}");
        assert_eq!(d.old_not_shown.as_deref(), Some(OLD_NOT_SHOWN));
        let text = d.text.as_deref().unwrap();
        assert!(
            text.contains("--- a/etc/app.yaml (previous content not shown)"),
            "{text}"
        );
        assert!(!text.contains("\n-"), "{text}");
        assert!(text.contains("+image: app:2\n"), "{text}");
        let human = report_of(&p).to_human(false);
        assert!(
            human.contains("/etc/app.yaml (secrets masked): previous content not shown"),
            "{human}"
        );
        assert_no_secret("the run's output", &all_output(&p));
    }
    // Created: the masked content, all added.
    let p = plan_text(&after, "0\tabsent\n", &HostState::default(), &plan_cx());
    let mut p = p;
    masked_diffs(&mut p, &HostState::default());
    let d = &p.resources[0].diffs[0];
    assert!(d.masked && d.old_not_shown.is_none());
    assert!(d.text.as_deref().unwrap().contains("+user: <secret:app>\n"));
    assert_no_secret("the run's output", &all_output(&p));
}

/// Content with no masked text (a file marked sensitive as a whole, a key) keeps the two
/// hashes; so does a file that reads a secret of fewer than four characters.
#[test]
fn content_without_a_masked_text_shows_two_hashes() {
    let manifest = "kind: File\nhosts: host:pg1\npath: /etc/app.yaml\ntemplate: app.tera\nsensitive: true\nvars: { image: x }\n";
    let (_dir, repo) = crate::testutil::repo_with_secrets(
        &[
            ("manifests/app.yaml", manifest),
            ("templates/app.tera", MASKED_TEMPLATE),
        ],
        &[("su", OLD_SU), ("app", APP), ("api", KEY)],
    );
    let h = repo.inventory.host("pg1").unwrap();
    let mut h = crate::render::render_host(&repo, h).unwrap();
    h.resources.retain(|d| d.kind == "File");
    assert!(content_of(&h).masked_text().is_none());
    assert!(next_state(&h).resources[0].masked.is_empty());
    let p = masked_plan(&h, OTHER_SHA, &HostState::default());
    let d = &p.resources[0].diffs[0];
    assert!(!d.masked && d.text.is_none());
    let human = report_of(&p).to_human(false);
    assert!(
        human.contains("sensitive content changed (sha256"),
        "{human}"
    );

    let short = Content::sensitive_masked(
        "pw: abc\n",
        "pw: <secret:x>\n".into(),
        &[("x".into(), "abc".into())],
    );
    assert!(short.masked_text().is_none());
}
