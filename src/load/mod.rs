//! Loading a cluster repo: parse the inventory, manifests, templates and secrets, and validate
//! everything that can be checked without rendering. Every problem is collected, with file, line,
//! column and field, before anything else happens.

use crate::confine::{self, Confined, RepoRoot};
use crate::diag::{Diagnostic, Diagnostics, display_path};
use crate::kinds::Manifest;
use crate::kinds::{CheckCx, RepoIndex, Spec};
use crate::model::desired::Content;
use crate::model::inventory::{self, Inventory};
use crate::model::manifest::parse_manifest;
use crate::secrets::{SecretCommand, SecretError, SecretStore, SecretValue};
use crate::template::Templates;
use crate::yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the inventory lives inside a repo.
pub const INVENTORY_FILE: &str = "inventory/hosts.yaml";

/// How to load a repo.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Repo root.
    pub root: PathBuf,
    /// Inventory overlay merged over the repo's inventory.
    pub overlay: Option<PathBuf>,
    /// age identity for secrets.
    pub identity: Option<PathBuf>,
    /// Render secrets as placeholders when no identity is given (validation only).
    pub placeholders: bool,
    /// The operator's program serving the secrets of `secrets/external.txt`.
    pub secret_command: Option<SecretCommand>,
}

/// A loaded, validated repo.
pub struct Repo {
    /// Root folder.
    pub root: PathBuf,
    /// Resolved inventory.
    pub inventory: Inventory,
    /// Manifests in file order, then document order.
    pub manifests: Vec<Manifest>,
    /// Templates.
    pub templates: Templates,
    /// Secrets.
    pub secrets: Arc<SecretStore>,
    /// CA certificates by CA name.
    pub ca_certificates: BTreeMap<String, Content>,
    /// The root resolved, to keep every file read inside the repo.
    pub confined: RepoRoot,
    selected: Vec<BTreeSet<String>>,
}

impl Repo {
    /// Manifests that land on `host`, in declaration order.
    pub fn manifests_for<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a Manifest> + 'a {
        self.manifests
            .iter()
            .zip(&self.selected)
            .filter(move |(_, s)| s.contains(host))
            .map(|(m, _)| m)
    }

    /// Hosts a manifest lands on.
    pub fn hosts_of(&self, m: &Manifest) -> Vec<&str> {
        self.manifests
            .iter()
            .position(|x| std::ptr::eq(x, m))
            .map(|i| self.selected[i].iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// What rendering sees of this repo.
    pub fn view(&self) -> crate::kinds::RepoView<'_> {
        crate::kinds::RepoView {
            inventory: &self.inventory,
            manifests: &self.manifests,
            templates: &self.templates,
            secrets: &self.secrets,
            ca_certificates: &self.ca_certificates,
            confined: &self.confined,
        }
    }

    /// Decrypts a secret for rendering.
    pub fn secret(&self, name: &str) -> Result<SecretValue, SecretError> {
        self.secrets.get_for_render(name)
    }

    /// The manifest `kind/name`.
    pub fn find(&self, kind: &str, name: &str) -> Option<&Manifest> {
        self.manifests
            .iter()
            .find(|m| m.kind == kind && m.name == name)
    }
}

/// Built-in templates of the composite kinds (a repo file of the same name overrides one).
pub fn builtin_templates() -> Vec<(&'static str, &'static str)> {
    let mut v = Vec::new();
    v.extend_from_slice(crate::kinds::postgres_cluster::BUILTIN_TEMPLATES);
    v.extend_from_slice(crate::kinds::backup_repo::BUILTIN_TEMPLATES);
    v
}

/// Loads and validates a repo; any problem is an error.
pub fn load(opts: &LoadOptions) -> Result<Repo, Diagnostics> {
    match load_lenient(opts) {
        (Some(repo), ds) if ds.is_empty() => Ok(repo),
        (_, ds) => Err(finish(ds)),
    }
}

/// Loads a repo as far as it can: the returned repo holds the manifests that parsed (for
/// `plumb validate`, which then renders them to find template errors too), and the problems.
pub fn load_lenient(opts: &LoadOptions) -> (Option<Repo>, Diagnostics) {
    let root = &opts.root;
    let mut ds = Diagnostics::new();
    if !root.is_dir() {
        ds.push(
            Diagnostic::file(root, "the cluster repo folder does not exist")
                .with_hint("pass the repo folder, e.g. `plumb validate path/to/repo`"),
        );
        return (None, ds);
    }
    let confined = match RepoRoot::new(root) {
        Ok(r) => r,
        Err(e) => {
            ds.push(Diagnostic::file(
                root,
                format!("cannot resolve the repo folder: {e}"),
            ));
            return (None, ds);
        }
    };
    // Symlinks leading out of the repo, in every folder plumb reads (templates/ is walked, and
    // its links reported, by the template loader).
    for dir in confine::READ_DIRS.iter().filter(|d| **d != "templates") {
        ds.extend(confined.walk(dir).escapes.iter().map(|e| e.diagnostic()));
    }

    // Inventory (and overlay).
    let inv_path = match confined.resolve(Path::new(INVENTORY_FILE)) {
        Ok(p) => Some(p),
        // Reported above, with the link.
        Err(Confined::Outside { .. }) => None,
        Err(Confined::Missing(_)) => Some(root.join(INVENTORY_FILE)),
    };
    let base = match inv_path.map(std::fs::read_to_string) {
        None => None,
        Some(Ok(text)) => {
            inventory::parse_inventory(Path::new(INVENTORY_FILE), &root.join("inventory"), &text)
                .map_err(|e| ds.extend(e.items))
                .ok()
        }
        Some(Err(e)) => {
            ds.push(
                Diagnostic::file(INVENTORY_FILE, format!("cannot read the inventory: {e}"))
                    .with_hint(
                        "a cluster repo has inventory/hosts.yaml, manifests/ and templates/",
                    ),
            );
            None
        }
    };
    let overlay = opts.overlay.as_ref().and_then(|p| {
        let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
        match std::fs::read_to_string(p) {
            Ok(text) => inventory::parse_inventory(p, &dir, &text)
                .map_err(|e| ds.extend(e.items))
                .ok(),
            Err(e) => {
                ds.push(Diagnostic::file(
                    p,
                    format!("cannot read the inventory overlay: {e}"),
                ));
                None
            }
        }
    });
    let inventory = match &base {
        Some(b) => inventory::resolve(b, overlay.as_ref())
            .map_err(|e| ds.extend(e.items))
            .ok(),
        None => None,
    };

    // Manifests.
    let mut manifests = Vec::new();
    let mut documents = 0;
    let problems_before = ds.len();
    let manifest_files = confined
        .walk("manifests")
        .files
        .into_iter()
        .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")));
    for f in manifest_files {
        let display = display_path(confined.path(), &f);
        let text = match std::fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) => {
                ds.push(Diagnostic::file(&display, format!("cannot read: {e}")));
                continue;
            }
        };
        let docs = match yaml::parse_documents(&text) {
            Ok(d) => d,
            Err(e) => {
                ds.push(
                    Diagnostic::at(
                        &display,
                        e.mark,
                        format!("YAML syntax error: {}", e.message),
                    )
                    .with_hint("check indentation, unclosed brackets and quotes around this line"),
                );
                continue;
            }
        };
        for doc in docs {
            if matches!(doc.root.resolve(), Some(yaml::Resolved::Null)) {
                continue; // an empty document, e.g. a trailing `---`
            }
            documents += 1;
            // Control characters in any key or value, by the field's class: reported on top of
            // whatever else is wrong with the document, which is still checked.
            let kind = doc.root.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            ds.extend(crate::kinds::control_char_diagnostics(
                &display, kind, &doc.root,
            ));
            match parse_manifest(&display, doc.root) {
                Ok(m) => manifests.push(m),
                Err(errs) => ds.extend(errs),
            }
        }
    }

    if documents == 0 && ds.len() == problems_before {
        // Hosts keep what plumb manages only while the repo declares it: converging a repo
        // that declares nothing would prune everything, on every host.
        ds.push(
            Diagnostic::file("manifests/", "the repo declares nothing: manifests/ is missing or holds no resource")
                .with_hint("converging it would prune every resource plumb manages on every host; check that the repo (or the pushed commit) is the right one, or declare at least one resource"),
        );
    }

    // Secrets.
    let mut store = match SecretStore::open(root) {
        Ok(s) => s,
        Err(SecretError::External { line, message }) => {
            let mark = crate::yaml::Mark { line, column: 1 };
            let file = format!("secrets/{}", crate::secrets::EXTERNAL_FILE);
            ds.push(Diagnostic::at(file, mark, message));
            return (None, finish(ds));
        }
        Err(e) => {
            ds.push(Diagnostic::file("secrets/", e.to_string()));
            return (None, finish(ds));
        }
    };
    if let Some(command) = &opts.secret_command {
        store = store.with_command(command.clone());
    }
    if let Some(id) = &opts.identity {
        match store.with_identity(id) {
            Ok(s) => store = s,
            Err(e) => {
                ds.push(Diagnostic::file(id, e.to_string()));
                return (None, finish(ds));
            }
        }
    }
    if opts.placeholders {
        store = store.allow_placeholders();
    }
    let secrets = Arc::new(store);

    let Some(inventory) = inventory else {
        return (None, finish(ds));
    };
    let templates = Templates::load(
        &confined,
        &inventory,
        secrets.clone(),
        &builtin_templates(),
        &mut ds,
    );
    let template_names = templates.names();

    // Duplicates.
    let mut seen: BTreeMap<String, &Manifest> = BTreeMap::new();
    for m in &manifests {
        let key = m.reference().to_string();
        if let Some(first) = seen.get(&key) {
            ds.push(
                m.error(
                    "name",
                    format!(
                        "duplicate resource `{key}`: already declared at {}:{}",
                        first.file.display(),
                        first.mark.line
                    ),
                )
                .with_hint("names are unique per kind; rename one of them"),
            );
        } else {
            seen.insert(key, m);
        }
    }

    // Selectors and kind checks.
    let mut selected = Vec::with_capacity(manifests.len());
    for m in &manifests {
        let mut set = BTreeSet::new();
        if let Some(sel) = &m.hosts {
            let bad = sel.check(&inventory);
            let is_list = m
                .doc
                .get("hosts")
                .is_some_and(|n| n.as_map().is_none() && n.as_str().is_none());
            for u in bad {
                let field = if is_list {
                    format!("hosts[{}]", u.index)
                } else {
                    "hosts".into()
                };
                ds.push(m.error(&field, u.message).with_hint(u.hint));
            }
            set = sel
                .select(&inventory)
                .into_iter()
                .map(str::to_string)
                .collect();
        }
        selected.push(set);
    }
    let secret_names = secrets.names().clone();
    let index = RepoIndex {
        root,
        confined: &confined,
        refused_templates: templates.refused(),
        inventory: &inventory,
        templates: &template_names,
        secrets: &secret_names,
        manifests: seen,
    };
    for m in &manifests {
        let mut cx = CheckCx {
            manifest: m,
            repo: &index,
            diags: &mut ds,
        };
        m.spec.kind().check(&mut cx);
    }

    // Every secret must open with the identity given, and the secret command must serve every
    // name it is listed for: a failure stops the run here, before any host is contacted.
    if secrets.has_identity() {
        for name in secrets.age_names() {
            if let Err(e) = secrets.get(name) {
                ds.push(Diagnostic::file(
                    format!("secrets/{name}.age"),
                    e.to_string(),
                ));
            }
        }
    }
    if secrets.has_command() {
        for (name, line) in secrets.external_names() {
            if let Err(e) = secrets.get(name) {
                let mark = crate::yaml::Mark {
                    line: *line,
                    column: 1,
                };
                let file = format!("secrets/{}", crate::secrets::EXTERNAL_FILE);
                ds.push(Diagnostic::at(file, mark, e.to_string()));
            }
        }
    }

    let mut ca_certificates = BTreeMap::new();
    for m in &manifests {
        if let Spec::CertificateAuthority(ca) = &m.spec
            && let Ok(path) = confined.resolve(Path::new(&ca.certificate))
            && let Ok(pem) = std::fs::read(path)
        {
            ca_certificates.insert(m.name.clone(), Content::plain(pem));
        }
    }

    drop(index);
    let repo = Repo {
        root: root.clone(),
        inventory,
        manifests,
        templates,
        secrets,
        ca_certificates,
        confined,
        selected,
    };
    (Some(repo), ds)
}

fn finish(mut ds: Diagnostics) -> Diagnostics {
    ds.sort();
    ds
}
