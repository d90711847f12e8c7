//! The lab itself: VMs that answer SSH like real ones, run systemd and their
//! own docker with the service image, see each other by name, and survive a
//! stop/start and a network cut with their address. Needs a Docker engine;
//! without one it fails (a skipped test must not count as passing).

mod support;

use std::net::Ipv4Addr;
use std::process::{Command, Output};

use support::lab;

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The output of a command that must have succeeded.
fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text(&out)
}

fn parse_cidr(cidr: &str) -> (u32, u32) {
    let (net, len) = cidr.split_once('/').expect("CIDR");
    let net: Ipv4Addr = net.parse().expect("CIDR address");
    let len: u32 = len.parse().expect("CIDR length");
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    (u32::from(net) & mask, mask)
}

fn container_running(vm: &str) -> bool {
    let out = Command::new("docker")
        .args([
            "container",
            "inspect",
            "-f",
            "{{.State.Running}}",
            &lab::container(vm),
        ])
        .output()
        .expect("docker inspect");
    text(&out).trim() == "true"
}

#[test]
fn lab_vms_behave_like_vms() {
    assert!(
        lab::docker_available(),
        "no Docker engine: the lab tests need one (start dockerd)"
    );
    // This test stops, cuts and finally removes VMs: nobody else may use
    // the lab meanwhile.
    let _lock = lab::lock();
    lab::up();

    let vms = lab::vm_names();
    if std::env::var_os("PLUMB_LAB_VMS").is_none() {
        assert_eq!(
            vms,
            ["pg-srv1", "pg-srv2", "pg-srv3", "pg-backup-repo-server1"]
        );
    }
    assert!(!vms.is_empty(), "the lab has no VMs");

    // The inventory overlay and known_hosts name every VM by its address,
    // inside the lab's subnet.
    let inventory = std::fs::read_to_string(lab::inventory_overlay()).expect("inventory overlay");
    let known_hosts = std::fs::read_to_string(lab::known_hosts()).expect("known_hosts");
    let cidr = inventory
        .lines()
        .find_map(|l| l.trim().strip_prefix("cluster_network: "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("cluster_network in the inventory overlay")
        .to_string();
    let (net, mask) = parse_cidr(&cidr);
    assert!(inventory.contains("  ssh_key: id_ed25519"), "{inventory}");
    assert!(
        inventory.contains("  known_hosts: known_hosts"),
        "{inventory}"
    );
    let mut addresses = Vec::new();
    for vm in &vms {
        let addr = lab::address(vm);
        let ip: Ipv4Addr = addr
            .parse()
            .unwrap_or_else(|_| panic!("{vm}: bad address {addr:?}"));
        assert_eq!(u32::from(ip) & mask, net, "{vm}: {addr} is outside {cidr}");
        assert!(
            inventory
                .lines()
                .any(|l| l == format!("  {vm}: {{ address: {addr} }}")),
            "{vm} {addr} missing from the inventory overlay:\n{inventory}"
        );
        assert!(
            known_hosts
                .lines()
                .any(|l| l.starts_with(&format!("{addr} ssh-ed25519 "))),
            "{addr} missing from known_hosts:\n{known_hosts}"
        );
        assert!(
            !addresses.contains(&addr),
            "{vm}: address {addr} used twice"
        );
        addresses.push(addr);
    }

    let host_image_id = ok(
        Command::new("docker")
            .args(["image", "inspect", "-f", "{{.Id}}", lab::SERVICE_IMAGE])
            .output()
            .expect("docker image inspect"),
        "docker image inspect on the host",
    );

    for vm in &vms {
        // SSH as root and as plumb (with passwordless sudo), strict host
        // key checking against the generated known_hosts.
        let out = ok(
            lab::ssh(vm, "root", "id -un; hostname"),
            &format!("ssh root@{vm}"),
        );
        assert_eq!(out, format!("root\n{vm}\n"), "{vm}: root session");
        let out = ok(
            lab::ssh(vm, "plumb", "id -un; sudo -n true && sudo -n id -un"),
            &format!("ssh plumb@{vm} with sudo -n"),
        );
        assert_eq!(out, "plumb\nroot\n", "{vm}: plumb session");

        // systemd is PID 1 and the system came up.
        let out = ok(
            lab::ssh(vm, "root", "cat /proc/1/comm"),
            &format!("{vm}: PID 1"),
        );
        assert_eq!(out.trim(), "systemd", "{vm}: PID 1 is not systemd");
        let out = lab::ssh(vm, "root", "systemctl is-system-running");
        let state = text(&out);
        assert!(
            matches!(state.trim(), "running" | "degraded"),
            "{vm}: systemctl is-system-running says {state:?} ({})",
            String::from_utf8_lossy(&out.stderr)
        );

        // Its own dockerd answers, with the service image (same image id).
        let out = ok(
            lab::ssh(
                vm,
                "root",
                "docker info --format '{{.ServerVersion}} {{.Driver}}'",
            ),
            &format!("{vm}: docker info"),
        );
        assert!(
            out.split_whitespace().nth(1).is_some(),
            "{vm}: docker info said {out:?}"
        );
        let out = ok(
            lab::ssh(
                vm,
                "root",
                &format!(
                    "docker image inspect -f '{{{{.Id}}}}' {}",
                    lab::SERVICE_IMAGE
                ),
            ),
            &format!("{vm}: service image"),
        );
        assert_eq!(
            out.trim(),
            host_image_id.trim(),
            "{vm}: service image differs from the host's"
        );

        // Every other VM by name: the name resolves to its address and its
        // sshd answers there.
        for (other, addr) in vms.iter().zip(&addresses) {
            if other == vm {
                continue;
            }
            let out = ok(
                lab::ssh(vm, "root", &format!("getent ahostsv4 {other} | head -n1")),
                &format!("{vm}: resolve {other}"),
            );
            assert_eq!(
                out.split_whitespace().next(),
                Some(addr.as_str()),
                "{vm}: {other} resolves to {out:?}"
            );
            ok(
                lab::ssh(
                    vm,
                    "root",
                    &format!("timeout 5 bash -c '</dev/tcp/{other}/22'"),
                ),
                &format!("{vm}: TCP to {other}:22"),
            );
        }
    }

    // The service image as compose will run it: host network, a bind mount
    // owned by 1001 written as user 1001:1001.
    let first = &vms[0];
    let out = ok(
        lab::exec(
            first,
            &format!(
                "set -e; d=$(mktemp -d); chown 1001:1001 \"$d\"; \
                 docker run --rm --network host --user 1001:1001 -v \"$d:/data\" {} \
                   sh -c 'id -u; id -g; touch /data/written; ip -4 -o addr show scope global'; \
                 stat -c '%u:%g' \"$d/written\"; rm -rf \"$d\"",
                lab::SERVICE_IMAGE
            ),
        ),
        &format!("{first}: container with host network and a 1001 bind mount"),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"1001"), "{out}");
    assert_eq!(lines.get(1), Some(&"1001"), "{out}");
    assert!(
        out.contains(&format!("inet {}/", addresses[0])),
        "not the VM's network: {out}"
    );
    assert_eq!(lines.last(), Some(&"1001:1001"), "{out}");
    let out = ok(
        lab::exec(
            first,
            &format!("docker run --rm {} id postgres", lab::SERVICE_IMAGE),
        ),
        "id postgres in the service image",
    );
    assert!(
        out.starts_with("uid=1001(postgres) gid=1001(postgres)"),
        "{out}"
    );

    // Stop and start one VM: down meanwhile, same address afterwards.
    let victim = &vms[vms.len().min(2) - 1];
    let before = lab::address(victim);
    lab::stop(victim);
    assert!(
        !container_running(victim),
        "{victim} still running after stop"
    );
    assert!(
        !lab::ssh(victim, "root", "true").status.success(),
        "{victim} answers SSH while stopped"
    );
    lab::start(victim);
    assert!(
        container_running(victim),
        "{victim} not running after start"
    );
    assert_eq!(
        lab::address(victim),
        before,
        "{victim} changed address across stop/start"
    );
    let out = ok(
        lab::ssh(victim, "root", "ip -4 -o addr show scope global"),
        "ssh after start",
    );
    assert!(
        out.contains(&format!("inet {before}/")),
        "{victim} after start: {out}"
    );

    // Cut its network: unreachable from the host and from another VM, then
    // reachable again at the same address.
    lab::disconnect(victim);
    assert!(container_running(victim), "{victim} stopped by disconnect");
    assert!(
        !lab::ssh(victim, "root", "true").status.success(),
        "{victim} answers SSH while cut off"
    );
    let out = lab::exec(first, &format!("timeout 5 bash -c '</dev/tcp/{before}/22'"));
    assert!(
        !out.status.success(),
        "{first} reaches {victim} while it is cut off"
    );
    lab::reconnect(victim);
    assert_eq!(
        lab::address(victim),
        before,
        "{victim} changed address across a network cut"
    );
    let out = ok(
        lab::ssh(victim, "root", "ip -4 -o addr show scope global"),
        "ssh after reconnect",
    );
    assert!(
        out.contains(&format!("inet {before}/")),
        "{victim} after reconnect: {out}"
    );
    ok(
        lab::exec(first, &format!("timeout 5 bash -c '</dev/tcp/{victim}/22'")),
        "TCP from another VM after reconnect",
    );

    // Down: no container, no network, no stale inventory.
    lab::down();
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=plumb-lab.lab={}", lab::lab_name()),
        ])
        .output()
        .expect("docker ps");
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "containers left: {}",
        text(&out)
    );
    let out = Command::new("docker")
        .args(["network", "inspect", &lab::network()])
        .output()
        .expect("docker network inspect");
    assert!(
        !out.status.success(),
        "network {} left after down",
        lab::network()
    );
    assert!(
        !lab::inventory_overlay().exists(),
        "inventory overlay left after down"
    );
}
