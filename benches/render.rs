//! Rendering speed: the reference repo's manifests and templates over a generated inventory of
//! N hosts (all but one in group `postgres`, so every member's patroni.yml, etcd.yml and
//! haproxy.cfg lists every member: the worst case). Prints load and render times.
//!
//! `cargo bench --bench render` (or `-- 1000 5000` for other sizes).

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
    let src = Path::new(env!("CARGO_MANIFEST_DIR"));
    let identity = src.join("examples/lab/demo-age-key.txt");
    println!(
        "{:>6} {:>10} {:>10} {:>12} {:>12}",
        "hosts", "load ms", "render ms", "resources", "µs/host"
    );
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["manifests", "templates", "secrets", "pki"] {
            copy_tree(&src.join(sub), &root.join(sub));
        }
        let mut inv = String::from(
            "defaults:\n  ssh_user: root\n  vars: { cluster_network: 10.0.0.0/8 }\ngroups:\n  postgres: {}\n  backup: {}\nhosts:\n",
        );
        for i in 0..n - 1 {
            inv.push_str(&format!(
                "  pg-srv{}: {{ address: 10.{}.{}.{}, groups: [postgres] }}\n",
                i + 1,
                i / 62500 % 250,
                i / 250 % 250,
                i % 250 + 1
            ));
        }
        inv.push_str("  pg-backup-repo-server1: { address: 10.255.255.1, groups: [backup] }\n");
        std::fs::create_dir_all(root.join("inventory")).unwrap();
        std::fs::write(root.join("inventory/hosts.yaml"), inv).unwrap();

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
            "{n:>6} {best_load:>10.1} {best_render:>10.1} {resources:>12} {:>12.1}",
            best_render * 1000.0 / n as f64
        );
    }
}
