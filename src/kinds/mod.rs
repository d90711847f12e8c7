//! Resource kinds: one module per kind, each holding its manifest fields, its validation and its
//! rendering into the desired state (and, for primitives, how it is probed, diffed and applied).
//!
//! Adding a kind means writing its module and adding one line to the [`kinds!`] registry below.

pub mod backup_repo;
pub mod certificate;
pub mod certificate_authority;
pub mod cluster;
pub mod command;
pub mod compose_stack;
pub mod context;
pub mod desired;
pub mod directory;
pub mod file;
pub mod fs;
pub mod group;
pub mod package;
pub mod postgres_cluster;
pub mod symlink;
pub mod systemd_unit;
pub mod user;

use crate::diag::{Diagnostic, Diagnostics};
use crate::model::desired::Content;
use crate::model::inventory::Inventory;
use crate::model::manifest::COMMON_FIELDS;
pub use desired::{Desired, DesiredHost};

/// A manifest of this crate's kinds.
pub type Manifest = crate::model::manifest::Manifest<Spec>;
use crate::text::TextClass;
use crate::vocab::cx::PlanCx;
use crate::vocab::records::Records;
use crate::vocab::state::Managed;
use crate::vocab::step::{Planned, Step};
use crate::yaml::{self, Node};
pub use context::{HostCx, RepoView};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What validation of one manifest can see of the rest of the repo.
pub struct RepoIndex<'a> {
    /// Repo root on disk.
    pub root: &'a Path,
    /// Resolved inventory.
    pub inventory: &'a Inventory,
    /// Names of templates under `templates/` (and built-in ones).
    pub templates: &'a BTreeSet<String>,
    /// Names of secrets under `secrets/`.
    pub secrets: &'a BTreeSet<String>,
    /// Every manifest by `Kind/name`.
    pub manifests: BTreeMap<String, &'a Manifest>,
    /// The root resolved: `source:` files must stay inside it.
    pub confined: &'a crate::confine::RepoRoot,
    /// Templates that cannot be used, with why (a symlink leading outside the repo).
    pub refused_templates: &'a BTreeMap<String, String>,
}

impl RepoIndex<'_> {
    /// The manifest `kind/name`, if declared.
    pub fn find(&self, kind: &str, name: &str) -> Option<&Manifest> {
        self.manifests.get(&format!("{kind}/{name}")).copied()
    }

    /// Names of declared resources of one kind.
    pub fn names_of(&self, kind: &str) -> Vec<&str> {
        self.manifests
            .values()
            .filter(|m| m.kind == kind)
            .map(|m| m.name.as_str())
            .collect()
    }
}

/// Validation of one manifest: collects diagnostics located in its document.
pub struct CheckCx<'a, 'r> {
    /// The manifest under check.
    pub manifest: &'a Manifest,
    /// The rest of the repo.
    pub repo: &'a RepoIndex<'r>,
    /// Where problems go.
    pub diags: &'a mut Diagnostics,
}

impl CheckCx<'_, '_> {
    /// Records a problem at `field`.
    pub fn error(&mut self, field: &str, message: impl Into<String>, hint: Option<String>) {
        let mut d = self.manifest.error(field, message);
        d.hint = hint;
        self.diags.push(d);
    }

    /// Checks a host path field (absolute, normal, inside `roots` when given).
    pub fn abs_path(&mut self, field: &str, path: &str, roots: &[&str]) {
        if let Err(e) = crate::model::values::check_abs_path(path, roots) {
            self.error(
                field,
                e.to_string(),
                Some("write a normalized absolute path such as /etc/app/app.conf".into()),
            );
        }
    }

    /// Checks that a template exists and can be used.
    pub fn template(&mut self, field: &str, name: &str) {
        if let Some(why) = self.repo.refused_templates.get(name) {
            self.error(
                field,
                format!("template `{name}` cannot be used: {why}"),
                Some(crate::confine::OUTSIDE_HINT.into()),
            );
        } else if !self.repo.templates.contains(name) {
            let known: Vec<&str> = self.repo.templates.iter().map(String::as_str).collect();
            let hint = match crate::model::manifest::closest(name, &known) {
                Some(c) => format!("did you mean `{c}`? templates live under templates/"),
                None => "templates live under templates/, named by their path there".into(),
            };
            self.error(
                field,
                format!("template `{name}` does not exist"),
                Some(hint),
            );
        }
    }

    /// Checks that a secret exists.
    pub fn secret(&mut self, field: &str, name: &str) {
        if !self.repo.secrets.contains(name) {
            self.error(
                field,
                format!("secret `{name}` is not defined"),
                Some(format!(
                    "create it with `plumb secrets set {name}` (reads the value from stdin)"
                )),
            );
        }
    }

    /// Checks an owner/group account name.
    pub fn account(&mut self, field: &str, name: &str) {
        let numeric = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
        if !numeric && !crate::model::values::is_valid_account_name(name) {
            self.error(
                field,
                format!("`{name}` is not a valid user or group name"),
                Some("use lowercase letters, digits, `_` and `-`, starting with a letter, or a numeric id".into()),
            );
        }
    }

    /// Checks a repo-relative source file: relative, inside the repo once symlinks are
    /// followed, and a file.
    pub fn source_file(&mut self, field: &str, path: &str) {
        use crate::confine::{Confined, OUTSIDE_HINT};
        if let Err(e) = crate::model::values::check_repo_relative(path) {
            self.error(field, e.to_string(), None);
            return;
        }
        match self.repo.confined.resolve(Path::new(path)) {
            Ok(p) if p.is_file() => {}
            Err(e @ Confined::Outside { .. }) => self.error(
                field,
                format!("source file `{path}` cannot be used: {e}"),
                Some(OUTSIDE_HINT.into()),
            ),
            _ => self.error(
                field,
                format!("source file `{path}` does not exist in the repo"),
                Some("paths are relative to the repo root, e.g. files/motd".into()),
            ),
        }
    }
}

/// Fields that may span several lines, by kind (`*`: every kind); a pattern ending in `.*` covers
/// every value below that field (template `vars`, whose values feed file content). Every other
/// field of a manifest, and every mapping key, is a single line: see [`crate::text`].
const MULTI_LINE_FIELDS: &[(&str, &str, TextClass)] = &[
    ("*", "description", TextClass::Script),
    ("File", "content", TextClass::Content),
    ("File", "vars.*", TextClass::Content),
    ("ComposeStack", "content", TextClass::Content),
    ("ComposeStack", "vars.*", TextClass::Content),
    ("SystemdUnit", "content", TextClass::Content),
    ("SystemdUnit", "vars.*", TextClass::Content),
    ("Command", "run", TextClass::Script),
    ("Command", "unless", TextClass::Script),
    ("Command", "onlyif", TextClass::Script),
    ("Command", "wait_for", TextClass::Script),
];

/// Which control characters the field at `path` of a `kind` manifest may hold.
pub fn field_class(kind: &str, path: &str) -> TextClass {
    MULTI_LINE_FIELDS
        .iter()
        .find(|(k, pattern, _)| {
            (*k == "*" || *k == kind)
                && match pattern.strip_suffix(".*") {
                    Some(prefix) => crate::text::is_below(path, prefix),
                    None => path == *pattern,
                }
        })
        .map(|(_, _, class)| *class)
        .unwrap_or(TextClass::Line)
}

/// Every control character in a manifest document that its field does not allow, as
/// diagnostics with file, line, field and hint.
pub fn control_char_diagnostics(file: &Path, kind: &str, doc: &Node) -> Vec<Diagnostic> {
    crate::text::walk_document(doc, &|path| {
        field_class(kind, &crate::text::field_path(path))
    })
    .into_iter()
    .map(|f| crate::diag::control_char(file, f))
    .collect()
}

/// Where file content comes from: exactly one of `content`, `template`, `source`.
pub enum ContentSource<'a> {
    /// Literal text.
    Inline(&'a str),
    /// A Tera template under `templates/`.
    Template(&'a str),
    /// A file of the repo, copied as is.
    Source(&'a str),
}

/// Picks the one content source of a resource, or says what is wrong.
pub fn content_source<'a>(
    content: &'a Option<String>,
    template: &'a Option<String>,
    source: &'a Option<String>,
) -> Result<ContentSource<'a>, String> {
    match (content, template, source) {
        (Some(c), None, None) => Ok(ContentSource::Inline(c)),
        (None, Some(t), None) => Ok(ContentSource::Template(t)),
        (None, None, Some(s)) => Ok(ContentSource::Source(s)),
        (None, None, None) => Err("one of `content`, `template` or `source` is required".into()),
        _ => Err("give only one of `content`, `template` or `source`".into()),
    }
}

/// Validates a content source triple.
pub fn check_content(
    cx: &mut CheckCx,
    content: &Option<String>,
    template: &Option<String>,
    source: &Option<String>,
    required: bool,
) {
    match content_source(content, template, source) {
        Ok(ContentSource::Template(t)) => cx.template("template", t),
        Ok(ContentSource::Source(s)) => cx.source_file("source", s),
        Ok(ContentSource::Inline(_)) => {}
        Err(msg) if required || content.is_some() || template.is_some() || source.is_some() => {
            cx.error("", msg, None)
        }
        Err(_) => {}
    }
}

/// Renders a content source for a host.
pub fn render_content(
    cx: &mut HostCx,
    m: &Manifest,
    src: ContentSource,
    resource: &serde_json::Value,
    vars: &serde_json::Map<String, serde_json::Value>,
) -> Result<Content, Diagnostic> {
    match src {
        ContentSource::Inline(text) => Ok(Content::plain(text.as_bytes().to_vec())),
        ContentSource::Template(name) => cx
            .render_template(name, resource, vars)
            .map_err(|f| f.into_diagnostic(m, "template")),
        ContentSource::Source(path) => cx
            .read_source(path)
            .map_err(|e| m.error("source", e.to_string())),
    }
}

macro_rules! kinds {
    (
        primitives { $($pk:ident => $pmod:ident :: $pspec:ident / $pstate:ident, rank $rank:expr;)* }
        composites { $($ck:ident => $cmod:ident :: $cspec:ident;)* }
    ) => {
        /// The fields of a manifest, by kind.
        // One per manifest, built once: the size of the composite variants does not matter.
        #[allow(clippy::large_enum_variant)]
        #[derive(Clone, Debug)]
        pub enum Spec {
            $(#[doc = concat!("A `", stringify!($pk), "`.")] $pk($pmod::$pspec),)*
            $(#[doc = concat!("A `", stringify!($ck), "`.")] $ck($cmod::$cspec),)*
        }

        /// The desired state of a primitive resource, by kind.
        #[derive(Clone, Debug, PartialEq, Serialize)]
        #[serde(untagged)]
        pub enum PrimitiveSpec {
            $(#[doc = concat!("A `", stringify!($pk), "`.")] $pk($pmod::$pstate),)*
        }

        /// Every kind name, primitives first.
        pub const KIND_NAMES: &[&str] = &[$(stringify!($pk),)* $(stringify!($ck),)*];

        /// Reads the kind-specific fields of a manifest document.
        pub fn parse_spec(kind: &str, doc: &Node) -> Result<Spec, yaml::de::Error> {
            match kind {
                $(stringify!($pk) => yaml::de::from_node_excluding(doc, COMMON_FIELDS).map(Spec::$pk),)*
                $(stringify!($ck) => yaml::de::from_node_excluding(doc, COMMON_FIELDS).map(Spec::$ck),)*
                _ => Err(serde::de::Error::custom(format!("unknown kind `{kind}`"))),
            }
        }

        impl crate::model::manifest::KindFields for Spec {
            const KIND_NAMES: &'static [&'static str] = KIND_NAMES;

            fn parse(kind: &str, doc: &Node) -> Result<Self, yaml::de::Error> {
                parse_spec(kind, doc)
            }

            fn default_name(&self) -> Option<String> {
                self.kind().default_name()
            }

            fn needs_hosts(&self) -> bool {
                self.kind().needs_hosts()
            }
        }

        impl Spec {
            /// The contract of this manifest's kind.
            pub fn kind(&self) -> &dyn Kind {
                match self {
                    $(Spec::$pk(s) => s,)*
                    $(Spec::$ck(s) => s,)*
                }
            }
        }

        impl PrimitiveSpec {
            /// How this resource is probed, planned and refreshed.
            pub fn engine(&self) -> &dyn Primitive {
                match self {
                    $(PrimitiveSpec::$pk(s) => s,)*
                }
            }

            /// The kind name.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(PrimitiveSpec::$pk(_) => stringify!($pk),)*
                }
            }

            /// Apply order: lower ranks first (packages, groups, users, directories, files, ...).
            pub fn rank(&self) -> u8 {
                match self {
                    $(PrimitiveSpec::$pk(_) => $rank,)*
                }
            }

            /// The kind's shell fragment (functions its probe records and steps call).
            pub fn shell(&self) -> &'static str {
                match self {
                    $(PrimitiveSpec::$pk(_) => <$pmod::$pstate as Primitive>::shell(),)*
                }
            }

            /// The contents this resource writes.
            pub fn contents(&self) -> Vec<&Content> {
                self.engine().contents()
            }

            /// Absolute paths this resource writes on the host.
            pub fn paths(&self) -> Vec<String> {
                self.engine().paths()
            }

            /// Probe lines run once per host that has this kind (its host facts).
            pub fn facts(&self) -> &'static str {
                match self {
                    $(PrimitiveSpec::$pk(_) => <$pmod::$pstate as Primitive>::facts().0,)*
                }
            }
        }

        /// The host facts every kind's probe lines may print (see [`Primitive::facts`]).
        pub fn fact_keys() -> Vec<&'static str> {
            let mut keys = Vec::new();
            $(keys.extend_from_slice(<$pmod::$pstate as Primitive>::facts().1);)*
            keys
        }

        /// Whether a resource of kind `kind` that left the repo may be removed as the user who can
        /// write its folder (see [`Primitive::removed_as_owner`]); false for an unknown kind.
        pub fn removed_as_owner(kind: &str) -> bool {
            match kind {
                $(stringify!($pk) => <$pmod::$pstate as Primitive>::removed_as_owner(),)*
                _ => false,
            }
        }

        /// Steps that remove a resource of kind `m.kind` that left the repo (see
        /// [`Primitive::prune`]); None for a kind this plumb does not know (a state file written
        /// by another version): nothing is removed then.
        pub fn prune_steps(m: &Managed, cx: &PlanCx) -> Option<Vec<Step>> {
            match m.kind.as_str() {
                $(stringify!($pk) => Some(<$pmod::$pstate as Primitive>::prune(m, cx)),)*
                _ => None,
            }
        }
    };
}

// The one list of kinds. A primitive's rank is its apply order (equal ranks are staged and
// applied together); adding a kind is its module (and shell fragment) plus one line here.
kinds! {
    primitives {
        Package => package::PackageSpec / PackageSpec, rank 0;
        Group => group::GroupSpec / GroupSpec, rank 1;
        User => user::UserSpec / UserSpec, rank 2;
        Directory => directory::DirectorySpec / DirectorySpec, rank 3;
        Certificate => certificate::CertificateSpec / CertificateState, rank 5;
        File => file::FileSpec / FileState, rank 5;
        Symlink => symlink::SymlinkSpec / SymlinkSpec, rank 6;
        SystemdUnit => systemd_unit::SystemdUnitSpec / UnitState, rank 7;
        ComposeStack => compose_stack::ComposeStackSpec / StackState, rank 8;
        Command => command::CommandSpec / CommandSpec, rank 9;
    }
    composites {
        CertificateAuthority => certificate_authority::CertificateAuthoritySpec;
        PostgresCluster => postgres_cluster::PostgresClusterSpec;
        BackupRepo => backup_repo::BackupRepoSpec;
    }
}

/// What every kind is: manifest fields that validate against the repo and render into the
/// desired state of a host (primitives render into themselves; composites expand).
pub trait Kind {
    /// Validates the fields against the repo.
    fn check(&self, cx: &mut CheckCx);

    /// Expands into the desired state of one host.
    fn render(&self, m: &Manifest, cx: &mut HostCx) -> Result<Vec<Desired>, Diagnostic>;

    /// A name derived from the fields when `name:` is omitted (paths for files).
    fn default_name(&self) -> Option<String> {
        None
    }

    /// False for kinds that live on the controller only.
    fn needs_hosts(&self) -> bool {
        true
    }
}

/// How a primitive converges on a host: the records its probe fragment prints, the planning of
/// those records into steps, what it does when notified, and how it is removed once it leaves
/// the repo. Its shell (the functions its probe lines and steps call) is its own `.sh` file,
/// beside its module. Forgetting a required piece is a compile error, not a silent no-op.
pub trait Primitive {
    /// The kind's shell fragment (may be empty for kinds that use only the generic records
    /// and file steps).
    fn shell() -> &'static str
    where
        Self: Sized;

    /// Probe lines run once per host that has this kind, and the host facts (`H` records)
    /// they print.
    fn facts() -> (&'static str, &'static [&'static str])
    where
        Self: Sized,
    {
        ("", &[])
    }

    /// Steps that remove a resource of this kind that left the repo, from what the host state
    /// recorded of it (an empty list: nothing is undone, e.g. packages and commands).
    fn prune(m: &Managed, cx: &PlanCx) -> Vec<Step>
    where
        Self: Sized;

    /// Appends shell that prints this resource's records, tagged with `index`.
    fn probe(&self, index: usize, out: &mut String);

    /// Record sub-keys that compare-and-swap covers: the parts of the actual state that the
    /// plan's steps overwrite.
    fn cas_keys(&self) -> &'static [&'static str] {
        &[""]
    }

    /// Appends shell that prints exactly the records named by [`Primitive::cas_keys`], in
    /// probe order (default: the whole probe).
    fn cas_probe(&self, index: usize, out: &mut String) {
        self.probe(index, out)
    }

    /// Decides the steps from the actual records.
    fn plan(&self, index: usize, actual: Records, cx: &PlanCx) -> Planned;

    /// Steps run when a resource that notifies this one changed.
    fn refresh(&self, _cx: &PlanCx) -> Vec<Step> {
        Vec::new()
    }

    /// True for kinds whose paths plumb may remove, once they left the repo, as the user who
    /// can write their folder: the kinds whose [`Primitive::owner`] is given (files, folders,
    /// symlinks, certificates). Removing anything else from such a folder is refused.
    fn removed_as_owner() -> bool
    where
        Self: Sized,
    {
        false
    }

    /// The user owning what this resource writes, when plumb may write it as that user in a
    /// folder that user can write (files, folders, symlinks, certificates: see
    /// [`crate::plan::chain`]). None for kinds whose files root acts on (units, stacks):
    /// those must live in folders only root can write.
    fn owner(&self) -> Option<&str> {
        None
    }

    /// The contents this resource writes (for sensitivity checks and hashing).
    fn contents(&self) -> Vec<&Content>;

    /// Absolute paths this resource writes on the host (two resources may not share one).
    fn paths(&self) -> Vec<String>;

    /// Fills in what the host state must remember to remove this resource later, besides its
    /// kind, name and paths (a unit's name, a stack's folder).
    fn remember(&self, _m: &mut Managed) {}
}

/// The shell fragments of the kinds among `specs`, each once, in registry order: what a probe
/// or apply script for those resources needs besides the generic libraries.
pub fn shells<'a>(specs: impl IntoIterator<Item = &'a PrimitiveSpec>) -> String {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = String::new();
    for s in specs {
        if seen.insert(s.kind()) {
            out.push_str(s.shell());
        }
    }
    out
}

/// The host-fact probe lines of the kinds among `specs`, each once.
pub fn facts<'a>(specs: impl IntoIterator<Item = &'a PrimitiveSpec>) -> String {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = String::new();
    for s in specs {
        if seen.insert(s.kind()) {
            out.push_str(s.facts());
        }
    }
    out
}

/// Builds a desired item for a manifest with its common fields.
pub fn desired(m: &Manifest, cx: &HostCx, name: String, spec: PrimitiveSpec) -> Desired {
    Desired {
        kind: spec.kind(),
        name,
        origin: cx.origin(m),
        drift: m.drift,
        notify: m.notify.clone(),
        spec,
    }
}
