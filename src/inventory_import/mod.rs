//! `plumb inventory import`: an Ansible inventory (INI or YAML, with `group_vars/` and
//! `host_vars/` beside it) turned into plumb's `inventory/hosts.yaml`.
//!
//! Ansible builds the inventory ([`ansible`], a faithful port of what ansible-core 2.19 does:
//! ranges, `host:port`, `[group:children]` declared in any order, Python literals in INI
//! values, PyYAML's YAML 1.1 scalars, group depth and priority), then [`emit`] writes plumb's
//! schema so that plumb resolves every host to the same groups and the same variables
//! `ansible-inventory --list` shows:
//!
//! - `children` are flattened: each host lists every group it is in (ancestors included),
//!   lowest precedence first, in Ansible's order (depth, `ansible_group_priority`, name);
//! - `all`'s vars become `defaults.vars`; a variable whose Ansible value plumb's layering
//!   would not reproduce (Ansible replaces mappings where plumb merges them, and
//!   `group_vars/` files outrank every group of the inventory file) is written on each host
//!   instead, with a comment saying why;
//! - `ansible_host`, `ansible_port`, `ansible_user`, `ansible_ssh_private_key_file`,
//!   `ansible_become` and a ProxyJump in `ansible_ssh_common_args` become `address`,
//!   `ssh_port`, `ssh_user`, `ssh_key`, `privilege` and `ssh_jump`;
//! - everything without an equivalent (other `ansible_*` variables, vault-encrypted values,
//!   variable names plumb reserves, passwords) is written as a comment where it was, never
//!   silently dropped; secrets are named, never copied.

mod ansible;
mod emit;
mod pyliteral;
mod yaml11;

use std::fmt;
use std::path::{Path, PathBuf};

/// An inventory plumb cannot read, with file and line.
#[derive(Debug, Clone)]
pub struct ImportError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0: the whole file).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)
        }
    }
}

impl std::error::Error for ImportError {}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// plumb's `inventory/hosts.yaml`, comments included.
    pub text: String,
    /// Hosts written.
    pub hosts: usize,
    /// Groups written.
    pub groups: usize,
    /// Things the operator should look at (also in the text as comments).
    pub notes: Vec<String>,
}

/// Imports the Ansible inventory at `path`.
pub fn import_file(path: &Path) -> Result<Imported, ImportError> {
    let inv = ansible::load(path)?;
    emit::emit(&inv, path)
}
