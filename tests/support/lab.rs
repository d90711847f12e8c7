//! The lab from integration tests: containers that act as VMs
//! (`examples/lab/lab`, see examples/lab/README.md).
//!
//! Plain `std::process::Command` around the `docker` CLI and the lab script.
//! Every function panics with a message saying what failed, and every wait
//! is bounded.
//!
//! Locking: `up`, `down` and `ensure_up` hold the lab's lock (a `flock` on
//! `$TMPDIR/<lab name>.lock`, the file the script itself locks) while they
//! run, so two test binaries never bring the lab up or down at the same time.
//! A test that changes the lab (stops VMs, cuts the network, brings it down)
//! should hold [`lock()`] for its whole body; inside it, `up`/`down`/
//! `ensure_up` reuse the lock held by the thread instead of waiting for it.
#![allow(dead_code)]

use std::cell::Cell;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The image every VM's own docker holds, for the compose stacks.
pub const SERVICE_IMAGE: &str = "plumb-lab/postgres-ha:15";

/// Bringing the lab up from nothing builds two images (about 2 minutes here).
const UP_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const DOWN_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// stop/start/restart/disconnect/reconnect; the script waits at most
/// PLUMB_LAB_WAIT (120 s) for sshd and dockerd.
const VM_OP_TIMEOUT: Duration = Duration::from_secs(4 * 60);
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Default bound of `exec` and `ssh`.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `lock()` waits for another process holding the lab.
const LOCK_TIMEOUT: Duration = Duration::from_secs(20 * 60);

thread_local! {
    /// How many `LabLock`s this thread holds (they nest).
    static HELD: Cell<u32> = const { Cell::new(0) };
}

/// The lab script, `examples/lab/lab`.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab/lab")
}

/// The lab's name (`PLUMB_LAB_NAME`, default `plumb-lab`): prefix of its
/// containers and name of its network.
pub fn lab_name() -> String {
    std::env::var("PLUMB_LAB_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "plumb-lab".to_string())
}

/// The Docker container of a VM.
pub fn container(vm: &str) -> String {
    format!("{}-{vm}", lab_name())
}

/// The lab's Docker network.
pub fn network() -> String {
    lab_name()
}

/// Does a Docker engine answer?
pub fn docker_available() -> bool {
    let mut cmd = Command::new("docker");
    cmd.args(["info", "--format", "{{.ServerVersion}}"]);
    match spawn_bounded(&mut cmd, Duration::from_secs(30)) {
        Ok(Some(out)) => out.status.success(),
        _ => false,
    }
}

/// Exclusive hold on the lab until dropped (see the module docs).
pub struct LabLock {
    file: File,
}

impl Drop for LabLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
        HELD.with(|h| h.set(h.get() - 1));
    }
}

/// Take the lab's lock, waiting at most 20 minutes for another holder.
pub fn lock() -> LabLock {
    if HELD.with(|h| h.get()) > 0 {
        // Nested in this thread: the outer guard already holds the flock.
        let file = lock_file();
        HELD.with(|h| h.set(h.get() + 1));
        return LabLock { file };
    }
    let path = lock_path();
    let file = lock_file();
    let deadline = Instant::now() + LOCK_TIMEOUT;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(200))
            }
            Err(TryLockError::WouldBlock) => {
                panic!(
                    "lab: another process held {} for {LOCK_TIMEOUT:?}",
                    path.display()
                )
            }
            Err(TryLockError::Error(e)) => panic!("lab: cannot lock {}: {e}", path.display()),
        }
    }
    HELD.with(|h| h.set(h.get() + 1));
    LabLock { file }
}

fn lock_path() -> PathBuf {
    // The script locks ${TMPDIR:-/tmp}/<name>.lock; temp_dir() is the same.
    std::env::temp_dir().join(format!("{}.lock", lab_name()))
}

fn lock_file() -> File {
    let path = lock_path();
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("lab: cannot open {}: {e}", path.display()))
}

fn with_lock<T>(f: impl FnOnce() -> T) -> T {
    let _guard = lock();
    f()
}

/// Build the images if needed, start the VMs and wait until each answers
/// SSH and its dockerd answers (the script's `up`).
pub fn up() {
    with_lock(|| {
        let out = script_ok(&["up"], UP_TIMEOUT);
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    })
}

/// Remove the VMs and the network; keep the images and the VMs' docker
/// volumes (the script's `down`). Idempotent.
pub fn down() {
    with_lock(|| {
        let out = script_ok(&["down"], DOWN_TIMEOUT);
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    })
}

/// `up()` unless every VM is already running, answering SSH, with dockerd
/// and the service image (the script's `status` exit code).
pub fn ensure_up() {
    with_lock(|| {
        let status = run_script(&["status"], QUERY_TIMEOUT);
        if !status.status.success() {
            up();
        }
    })
}

/// The lab's VM names (`PLUMB_LAB_VMS`, default the reference repo's four).
pub fn vm_names() -> Vec<String> {
    let out = script_ok(&["vms"], QUERY_TIMEOUT);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// A VM's pinned address on the lab network (the VM must exist).
pub fn address(vm: &str) -> String {
    let out = script_ok(&["address", vm], QUERY_TIMEOUT);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Stop a VM (systemd shuts down; the container stays).
pub fn stop(vm: &str) {
    script_ok(&["stop", vm], VM_OP_TIMEOUT);
}

/// Power a VM off (`docker kill`: nothing is shut down, its connections are left hanging);
/// [`start`] brings it back.
pub fn kill(vm: &str) {
    script_ok(&["kill", vm], VM_OP_TIMEOUT);
}

/// Start a stopped VM and wait until it answers SSH and dockerd again.
pub fn start(vm: &str) {
    script_ok(&["start", vm], VM_OP_TIMEOUT);
}

/// `stop` then `start`.
pub fn restart(vm: &str) {
    script_ok(&["restart", vm], VM_OP_TIMEOUT);
}

/// Cut a VM off the lab network (it keeps running; its interface goes away).
pub fn disconnect(vm: &str) {
    script_ok(&["disconnect", vm], VM_OP_TIMEOUT);
}

/// Put a VM back on the lab network with the same address; waits for SSH.
/// Docker names the new interface eth1 (eth0 again after a restart).
pub fn reconnect(vm: &str) {
    script_ok(&["reconnect", vm], VM_OP_TIMEOUT);
}

/// Run `sh -c <sh_command>` as root in a VM (`docker exec`), bounded by
/// [`EXEC_TIMEOUT`]. The output is returned whatever the exit status.
pub fn exec(vm: &str, sh_command: &str) -> Output {
    exec_timeout(vm, sh_command, EXEC_TIMEOUT)
}

/// [`exec`] with another bound.
pub fn exec_timeout(vm: &str, sh_command: &str, timeout: Duration) -> Output {
    let mut cmd = Command::new("docker");
    cmd.args(["exec", &container(vm), "sh", "-c", sh_command]);
    run(&mut cmd, timeout, &format!("docker exec on {vm}"))
}

/// The lab's state folder (keys, known_hosts, inventory overlay).
pub fn state_dir() -> PathBuf {
    let out = script_ok(&["state-dir"], QUERY_TIMEOUT);
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The inventory overlay `up` writes: `plumb --inventory <this>`.
pub fn inventory_overlay() -> PathBuf {
    state_dir().join("inventory.yaml")
}

/// The overlay `up` writes for repos whose inventory has only the Postgres VMs (no VM whose
/// name contains `backup`): examples/pgbouncer, examples/nomad-consul.
pub fn postgres_overlay() -> PathBuf {
    state_dir().join("inventory-postgres.yaml")
}

/// The private key plumb (and the tests) use for every VM.
pub fn ssh_key() -> PathBuf {
    state_dir().join("id_ed25519")
}

/// The VMs' host keys, by address.
pub fn known_hosts() -> PathBuf {
    state_dir().join("known_hosts")
}

/// An OpenSSH `ssh` to `user@vm` with the lab's key and known_hosts, strict
/// host key checking, no agent, no user config, no prompts; append the
/// remote command.
pub fn ssh_command(vm: &str, user: &str) -> Command {
    let state = state_dir();
    let mut cmd = Command::new("ssh");
    cmd.arg("-F").arg("/dev/null");
    cmd.arg("-i").arg(state.join("id_ed25519"));
    cmd.args([
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=yes",
    ]);
    cmd.arg("-o").arg(format!(
        "UserKnownHostsFile={}",
        state.join("known_hosts").display()
    ));
    cmd.args([
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
    ]);
    cmd.args(["-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"]);
    cmd.arg(format!("{user}@{}", address(vm)));
    cmd
}

/// Run a command on a VM over SSH as `user`, bounded by [`EXEC_TIMEOUT`].
/// The output is returned whatever the exit status.
pub fn ssh(vm: &str, user: &str, command: &str) -> Output {
    let mut cmd = ssh_command(vm, user);
    cmd.arg(command);
    run(&mut cmd, EXEC_TIMEOUT, &format!("ssh {user}@{vm}"))
}

// ------------------------------------------------------------ processes --

/// Run the lab script (holding the lock means the script must not take it).
fn run_script(args: &[&str], timeout: Duration) -> Output {
    let mut cmd = Command::new(script());
    cmd.args(args);
    if HELD.with(|h| h.get()) > 0 {
        cmd.env("PLUMB_LAB_LOCKED", "1");
    }
    run(&mut cmd, timeout, &format!("lab {}", args.join(" ")))
}

fn script_ok(args: &[&str], timeout: Duration) -> Output {
    let out = run_script(args, timeout);
    if !out.status.success() {
        panic!(
            "lab {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Run a command to completion, killing it (and its process group) and
/// panicking if it outlives `timeout`.
fn run(cmd: &mut Command, timeout: Duration, what: &str) -> Output {
    match spawn_bounded(cmd, timeout) {
        Ok(Some(out)) => out,
        Ok(None) => panic!("lab: {what} did not finish within {timeout:?} (killed)"),
        Err(e) => panic!("lab: cannot run {what}: {e}"),
    }
}

/// `Ok(None)` on timeout.
fn spawn_bounded(cmd: &mut Command, timeout: Duration) -> std::io::Result<Option<Output>> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group, so a timeout kills the script's children too.
        .process_group(0);
    let mut child = cmd.spawn()?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    };
    Ok(Some(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }))
}

/// Copies a folder tree (a repo fixture) into `to`.
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
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

/// The text of a lab inventory overlay (`overlay`, as `up` writes it) with the key and
/// known_hosts made absolute, so a copy of it works from any folder.
pub fn overlay_text(overlay: &std::path::Path) -> String {
    let state = state_dir();
    std::fs::read_to_string(overlay)
        .unwrap_or_else(|e| panic!("lab overlay {}: {e}", overlay.display()))
        .replace(
            "ssh_key: id_ed25519",
            &format!("ssh_key: {}", state.join("id_ed25519").display()),
        )
        .replace(
            "known_hosts: known_hosts",
            &format!("known_hosts: {}", state.join("known_hosts").display()),
        )
}

/// `git ARGS` in `dir` (a repo a test makes), with a fixed identity and no prompt; panics on
/// failure with git's message.
pub fn git(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "e2e")
        .env("GIT_AUTHOR_EMAIL", "e2e@example.invalid")
        .env("GIT_COMMITTER_NAME", "e2e")
        .env("GIT_COMMITTER_EMAIL", "e2e@example.invalid")
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
