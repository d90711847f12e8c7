//! Rendering: from the loaded repo to each host's desired state. Pure apart from reading the
//! repo's files; no host is contacted.
//!
//! Templates are Tera 1.x (Jinja2-like, which is what operators coming from Ansible know; the 2.x
//! rewrite departs from Jinja2 on purpose). A template sees the host's merged vars at top level,
//! `host`, `hosts` (every host by name), `groups` (every group as a list of hosts with their
//! addresses), `resource` (the resource's own fields) and the function `secret(name="...")`.
//! Undefined variables are errors, reported with the template's file and line.

use crate::diag::{Diagnostic, Diagnostics};
use crate::kinds::PrimitiveSpec;
use crate::kinds::{Desired, DesiredHost};
use crate::load::Repo;
use crate::model::desired::{Content, Origin};
use crate::model::inventory::Host;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

pub use crate::kinds::context::HostCx;
pub use crate::template::RenderFailure;

/// Renders the desired state of one host.
pub fn render_host(repo: &Repo, host: &Host) -> Result<DesiredHost, Diagnostics> {
    let mut cx = HostCx::new(repo.view(), host);
    let mut ds = Diagnostics::new();
    let mut items: Vec<Desired> = Vec::new();
    for m in repo.manifests_for(&host.name) {
        cx.set_via(None);
        match m.spec.kind().render(m, &mut cx) {
            Ok(v) => items.extend(v),
            Err(d) => ds.push(d),
        }
    }
    let items = merge_and_check(&host.name, items, &mut ds);
    check_notify(repo, &host.name, &items, &mut ds);
    let mut resources = items;
    order_for_apply(&mut resources);
    leave_managed_homes_to_their_directory(&mut resources);
    ds.into_result(DesiredHost {
        host: host.name.clone(),
        resources,
    })
}

/// Renders every host; problems of all hosts are reported together, and a problem that
/// repeats on many hosts (a template error, say) is reported once with the list of hosts.
pub fn render_all(repo: &Repo) -> Result<Vec<DesiredHost>, Diagnostics> {
    let mut out = Vec::new();
    let mut seen: Vec<(Diagnostic, Vec<String>)> = Vec::new();
    for h in &repo.inventory.hosts {
        match render_host(repo, h) {
            Ok(d) => out.push(d),
            Err(e) => {
                let marker = format!("host `{}`", h.name);
                for mut d in e.items {
                    d.message = d.message.replace(&marker, "host `{}`");
                    match seen.iter_mut().find(|(x, _)| *x == d) {
                        Some((_, hosts)) => hosts.push(h.name.clone()),
                        None => seen.push((d, vec![h.name.clone()])),
                    }
                }
            }
        }
    }
    let mut ds = Diagnostics::new();
    for (mut d, hosts) in seen {
        let list = hosts
            .iter()
            .map(|h| format!("`{h}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let label = if hosts.len() == 1 { "host" } else { "hosts" };
        d.message = d.message.replace("host `{}`", &format!("{label} {list}"));
        ds.push(d);
    }
    ds.into_result(out)
}

/// Apply order: by kind rank, and directories parents first, so that creating one never
/// creates another as a side effect (`mkdir -p`) and trips that one's compare-and-swap.
fn order_for_apply(resources: &mut [Desired]) {
    resources.sort_by(|a, b| {
        let dir_path = |d: &Desired| match &d.spec {
            PrimitiveSpec::Directory(dir) => Some(dir.path.clone()),
            _ => None,
        };
        a.spec
            .rank()
            .cmp(&b.spec.rank())
            .then_with(|| dir_path(a).cmp(&dir_path(b)))
    });
}

/// A user whose home is a managed Directory of the same host is created without a home
/// (`useradd -M`): the Directory creates it with its own owner and mode. Otherwise `useradd -m`
/// would create it first, and the Directory's compare-and-swap would refuse a path that plumb
/// itself changed in the same run.
fn leave_managed_homes_to_their_directory(resources: &mut [Desired]) {
    let dirs: HashSet<String> = resources
        .iter()
        .filter_map(|d| match &d.spec {
            PrimitiveSpec::Directory(dir) => Some(dir.path.clone()),
            _ => None,
        })
        .collect();
    for d in resources.iter_mut() {
        if let PrimitiveSpec::User(u) = &mut d.spec
            && u.create_home
            && dirs.contains(&u.home_path())
        {
            u.create_home = false;
        }
    }
}

fn conflict(host: &str, what: String, a: &Origin, b: &Origin) -> Diagnostic {
    Diagnostic::at(
        b.file.clone(),
        b.mark,
        format!("{what} on host `{host}`: declared here and at {a}"),
    )
}

/// Folds identical duplicates (a composite and a manifest both declaring the `postgres` user the
/// same way is fine) and reports real conflicts: one resource declared two ways, two resources
/// writing one path, two users or groups sharing an id.
fn merge_and_check(host: &str, items: Vec<Desired>, ds: &mut Diagnostics) -> Vec<Desired> {
    let mut out: Vec<Desired> = Vec::with_capacity(items.len());
    let mut by_ref: HashMap<(&'static str, String), usize> = HashMap::new();
    for d in items {
        let key = (d.kind, d.name.clone());
        if let Some(&i) = by_ref.get(&key) {
            if out[i].spec != d.spec {
                ds.push(
                    conflict(
                        host,
                        format!("{}/{} is declared twice, differently", d.kind, d.name),
                        &out[i].origin,
                        &d.origin,
                    )
                    .with_hint("declare it once, or make both declarations identical"),
                );
            }
            continue;
        }
        by_ref.insert(key, out.len());
        out.push(d);
    }
    let mut paths: BTreeMap<String, usize> = BTreeMap::new();
    let mut uids: BTreeMap<u32, usize> = BTreeMap::new();
    let mut gids: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, d) in out.iter().enumerate() {
        for p in d.spec.paths() {
            if let Some(&j) = paths.get(&p) {
                ds.push(
                    conflict(
                        host,
                        format!(
                            "{}/{} and {}/{} both write `{p}`",
                            out[j].kind, out[j].name, d.kind, d.name
                        ),
                        &out[j].origin,
                        &d.origin,
                    )
                    .with_hint("a path may belong to one resource only"),
                );
            } else {
                paths.insert(p, i);
            }
        }
        let ids = match &d.spec {
            PrimitiveSpec::User(u) => u.uid.map(|id| (id, &mut uids, "uid")),
            PrimitiveSpec::Group(g) => g.gid.map(|id| (id, &mut gids, "gid")),
            _ => None,
        };
        if let Some((id, seen, what)) = ids {
            if let Some(&j) = seen.get(&id) {
                ds.push(
                    conflict(
                        host,
                        format!(
                            "{what} {id} is given to both {}/{} and {}/{}",
                            out[j].kind, out[j].name, d.kind, d.name
                        ),
                        &out[j].origin,
                        &d.origin,
                    )
                    .with_hint(format!("each {what} belongs to one account")),
                );
            } else {
                seen.insert(id, i);
            }
        }
    }
    out
}

fn check_notify(repo: &Repo, host: &str, items: &[Desired], ds: &mut Diagnostics) {
    for m in repo.manifests_for(host) {
        for (i, r) in m.notify.iter().enumerate() {
            let found = items.iter().any(|d| d.kind == r.kind && d.name == r.name);
            if !found {
                ds.push(
                    m.error(
                        &format!("notify[{i}]"),
                        format!("`{r}` is not a resource on host `{host}`"),
                    )
                    .with_hint(
                        "notify names a resource that lands on the same hosts, as `Kind/name`",
                    ),
                );
            }
        }
    }
}

/// Writes each host's files under `out/HOST/` mirroring their absolute paths (for review and
/// for validators). Returns the files written.
pub fn write_tree(out: &std::path::Path, hosts: &[DesiredHost]) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for h in hosts {
        for d in &h.resources {
            for (path, content) in files_of(&d.spec) {
                let rel = path.trim_start_matches('/');
                let target = out.join(&h.host).join(rel);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&target, content.bytes())?;
                written.push(target);
            }
        }
    }
    Ok(written)
}

/// The files (path, content) a primitive writes whose content is known at render time.
pub fn files_of(spec: &PrimitiveSpec) -> Vec<(String, &Content)> {
    match spec {
        PrimitiveSpec::File(f) => f.content.iter().map(|c| (f.path.clone(), c)).collect(),
        PrimitiveSpec::SystemdUnit(u) => u.content.iter().map(|c| (u.path.clone(), c)).collect(),
        PrimitiveSpec::ComposeStack(s) => {
            let mut v: Vec<(String, &Content)> =
                s.compose.iter().map(|c| (s.compose_path(), c)).collect();
            v.extend(s.env.iter().map(|c| (s.env_path(), c)));
            v
        }
        PrimitiveSpec::Certificate(c) => c
            .ca_path
            .iter()
            .map(|p| (p.clone(), &c.ca_certificate))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use crate::kinds::PrimitiveSpec;
    use crate::testutil::{item, render, repo, text};

    #[test]
    fn a_name_rendered_from_a_multi_line_var_is_refused() {
        let inventory = crate::testutil::INVENTORY.replace(
            "cluster_network: 10.0.0.0/24",
            "cluster_network: 10.0.0.0/24\n    cn: \"pg\\nEVIL\"",
        );
        let dir = repo(&[
            ("inventory/hosts.yaml", &inventory),
            (
                "manifests/cert.yaml",
                "kind: Certificate\nname: c\nhosts: host:pg1\nca: pg-ca\ncommon_name: \"{{ cn }}\"\ncert_path: /etc/c.crt\nkey_path: /etc/c.key\n",
            ),
        ]);
        let repo = crate::testutil::load(&dir).unwrap_or_else(|e| panic!("{e}"));
        let host = repo.inventory.host("pg1").unwrap();
        let err = super::render_host(&repo, host).unwrap_err().to_string();
        assert!(
            err.contains("field `common_name`: `{{ cn }}` renders to `pg\\nEVIL`, which contains a control character (newline"),
            "{err}"
        );
    }

    const MANIFESTS: &str = "\
kind: Directory
hosts: host:pg1
path: /srv/app/data/inner
---
kind: Group
name: app
hosts: host:pg1
gid: 1500
---
kind: Directory
hosts: host:pg1
path: /srv/app
---
kind: User
name: app
hosts: host:pg1
uid: 1500
group: app
home: /srv/app
---
kind: User
name: other
hosts: host:pg1
uid: 1501
---
kind: Directory
hosts: host:pg1
path: /srv/app/data
";

    #[test]
    fn directories_come_parents_first_after_accounts() {
        let dir = repo(&[("manifests/app.yaml", MANIFESTS)]);
        let h = render(&dir, "pg1");
        let order: Vec<String> = h
            .resources
            .iter()
            .filter(|d| d.kind != "CertificateAuthority")
            .map(|d| format!("{}/{}", d.kind, d.name))
            .collect();
        assert_eq!(
            order,
            [
                "Group/app",
                "User/app",
                "User/other",
                "Directory//srv/app",
                "Directory//srv/app/data",
                "Directory//srv/app/data/inner",
            ]
        );
    }

    #[test]
    fn every_host_sees_the_whole_inventory_even_after_a_resource_shadowed_it() {
        // `hosts` and `groups` are lent from host to host; a resource's own vars may shadow
        // them for its template only.
        let manifests = "\
kind: File
hosts: all
path: /etc/shadowed
template: shadowed.tera
vars: { hosts: shadow, groups: shadow }
---
kind: File
hosts: all
path: /etc/inventory
template: inventory.tera
";
        let dir = repo(&[
            ("manifests/app.yaml", manifests),
            ("templates/shadowed.tera", "{{ hosts }} {{ groups }}"),
            (
                "templates/inventory.tera",
                "{% for n, h in hosts %}{{ n }}={{ h.address }} {% endfor %}|{% for h in groups.postgres %}{{ h.name }} {% endfor %}",
            ),
        ]);
        let repo = crate::testutil::load(&dir).unwrap_or_else(|e| panic!("{e}"));
        let all = super::render_all(&repo).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.len(), 4);
        for h in &all {
            assert_eq!(text(item(h, "File", "/etc/shadowed")), "shadow shadow");
            assert_eq!(
                text(item(h, "File", "/etc/inventory")),
                "backup1=10.0.0.11 pg1=10.0.0.1 pg2=10.0.0.2 pg3=10.0.0.3 |pg1 pg2 pg3 ",
                "on {}",
                h.host
            );
        }
    }

    #[test]
    fn a_home_that_is_a_managed_directory_is_not_created_by_useradd() {
        let dir = repo(&[("manifests/app.yaml", MANIFESTS)]);
        let h = render(&dir, "pg1");
        let create_home = |name: &str| match &item(&h, "User", name).spec {
            PrimitiveSpec::User(u) => u.create_home,
            other => panic!("{other:?}"),
        };
        assert!(!create_home("app"), "/srv/app is a managed Directory");
        assert!(create_home("other"), "/home/other is not managed");
    }
}
