//! Rendering speed: the reference repo's manifests and templates over a generated inventory of
//! N hosts, in one of two shapes:
//!
//! - `one-cluster` (default): all hosts but one in group `postgres`, members of the reference
//!   repo's one PostgresCluster, so every member's patroni.yml, etcd.yml and haproxy.cfg lists
//!   every member: the output grows with the square of N (the worst case).
//! - `fleet`: the same hosts as clusters of three (`postgres01` keeps the backup repo; the others
//!   are copies of its manifest without backups): what a fleet of many HA clusters looks like.
//!
//! Prints load and render times (best of three).
//!
//! `cargo bench --bench render` (10, 100, 1000 hosts in both shapes), or
//! `cargo bench --bench render -- fleet 1000 5000` for one shape and other sizes.

use std::path::Path;
use std::time::Instant;

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_tree(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10, 100, 1000]
    } else {
        sizes
    };
    let shapes: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a == "fleet" || a == "one-cluster")
        .collect();
    let shapes = if shapes.is_empty() {
        vec!["one-cluster".to_string(), "fleet".to_string()]
    } else {
        shapes
    };
    for shape in &shapes {
        run(shape == "fleet", &sizes);
    }
}

fn run(fleet: bool, sizes: &[usize]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"));
    let identity = src.join("examples/lab/demo-age-key.txt");
    println!(
        "{:>12} {:>6} {:>10} {:>10} {:>12} {:>12}",
        "shape", "hosts", "load ms", "render ms", "resources", "µs/host"
    );
    for &n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["manifests", "templates", "secrets", "pki"] {
            copy_tree(&src.join(sub), &root.join(sub));
        }
        let mut inv = String::from(
            "defaults:\n  ssh_user: root\n  vars: { cluster_network: 10.0.0.0/8 }\ngroups:\n  postgres: {}\n  backup: {}\n",
        );
        if fleet {
            for k in 0..(n - 1).div_ceil(3) {
                inv.push_str(&format!("  pgc{k}: {{}}\n"));
            }
        }
        inv.push_str("hosts:\n");
        for i in 0..n - 1 {
            inv.push_str(&format!(
                "  pg-srv{}: {{ address: 10.{}.{}.{}, groups: [postgres{}] }}\n",
                i + 1,
                i / 62500 % 250,
                i / 250 % 250,
                i % 250 + 1,
                if fleet {
                    format!(", pgc{}", i / 3)
                } else {
                    String::new()
                }
            ));
        }
        inv.push_str("  pg-backup-repo-server1: { address: 10.255.255.1, groups: [backup] }\n");
        std::fs::create_dir_all(root.join("inventory")).unwrap();
        std::fs::write(root.join("inventory/hosts.yaml"), inv).unwrap();
        if fleet {
            let reference = std::fs::read_to_string(src.join("manifests/postgres01.yaml")).unwrap();
            let first = reference.replace("hosts: group:postgres ", "hosts: group:pgc0     ");
            assert_ne!(
                first, reference,
                "postgres01.yaml no longer selects group:postgres"
            );
            std::fs::write(root.join("manifests/postgres01.yaml"), &first).unwrap();
            let copy: String = first
                .lines()
                .filter(|l| !l.starts_with("backup:"))
                .collect::<Vec<_>>()
                .join("\n");
            for k in 1..(n - 1).div_ceil(3) {
                let m = copy
                    .replace("name: postgres01 ", &format!("name: pgc{k:<6}  "))
                    .replace("group:pgc0 ", &format!("group:pgc{k} "));
                std::fs::write(root.join(format!("manifests/pgc{k}.yaml")), m).unwrap();
            }
        }

        let mut best_load = f64::MAX;
        let mut best_render = f64::MAX;
        let mut resources = 0;
        for _ in 0..3 {
            let t = Instant::now();
            let repo = plumb::load::load(&plumb::load::LoadOptions {
                root: root.to_path_buf(),
                overlay: None,
                identity: Some(identity.clone()),
                placeholders: false,
                secret_command: None,
            })
            .unwrap_or_else(|e| panic!("{e}"));
            let load = t.elapsed().as_secs_f64() * 1000.0;
            let t = Instant::now();
            let hosts = plumb::render::render_all(&repo).unwrap_or_else(|e| panic!("{e}"));
            let render = t.elapsed().as_secs_f64() * 1000.0;
            resources = hosts.iter().map(|h| h.resources.len()).sum();
            best_load = best_load.min(load);
            best_render = best_render.min(render);
        }
        println!(
            "{:>12} {n:>6} {best_load:>10.1} {best_render:>10.1} {resources:>12} {:>12.1}",
            if fleet { "fleet" } else { "one-cluster" },
            best_render * 1000.0 / n as f64
        );
    }
}
