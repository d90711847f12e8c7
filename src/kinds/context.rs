//! What a kind sees while it renders: the host, a template context built once per host, and a
//! borrowed view of the repo (inventory, manifests, templates, secrets, CA certificates), not
//! the loaded repo itself: the load stage sits above the kinds.

use super::Manifest;
use crate::confine::RepoRoot;
use crate::model::desired::{Content, Origin};
use crate::model::inventory::{Host, Inventory};
use crate::secrets::{SecretError, SecretStore, SecretValue};
use crate::template::{RenderFailure, Templates};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Why a repo file cannot be read for a host.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The path is not a plain relative path of the repo.
    #[error(transparent)]
    Path(#[from] crate::model::values::PathError),
    /// A symlink on its way leads outside the repo, or it is missing.
    #[error("cannot read source file `{path}`: {why}")]
    Confined {
        /// The path, relative to the repo.
        path: String,
        /// What was found.
        why: crate::confine::Confined,
    },
    /// Reading it failed.
    #[error("cannot read source file `{path}`: {source}")]
    Io {
        /// The path, relative to the repo.
        path: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// A CA the repo does not declare (or whose certificate was not loaded).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown CA `{0}`")]
pub struct UnknownCa(pub String);

/// What rendering sees of the repo, borrowed from the loaded repo.
#[derive(Clone, Copy)]
pub struct RepoView<'r> {
    /// Resolved inventory.
    pub inventory: &'r Inventory,
    /// Manifests in file order, then document order.
    pub manifests: &'r [Manifest],
    /// Templates.
    pub templates: &'r Templates,
    /// Secrets.
    pub secrets: &'r SecretStore,
    /// CA certificates by CA name.
    pub ca_certificates: &'r BTreeMap<String, Content>,
    /// The repo's root, to keep every file read inside it.
    pub confined: &'r RepoRoot,
}

impl<'r> RepoView<'r> {
    /// The manifest `kind/name`.
    pub fn find(&self, kind: &str, name: &str) -> Option<&'r Manifest> {
        self.manifests
            .iter()
            .find(|m| m.kind == kind && m.name == name)
    }

    /// Decrypts a secret for rendering.
    pub fn secret(&self, name: &str) -> Result<SecretValue, SecretError> {
        self.secrets.get_for_render(name)
    }
}

/// Rendering of one host: the host, the repo, and a template context built once.
pub struct HostCx<'r> {
    repo: RepoView<'r>,
    host: &'r Host,
    context: tera::Context,
    via: Option<String>,
}

impl<'r> HostCx<'r> {
    /// Prepares rendering for one host.
    pub fn new(repo: RepoView<'r>, host: &'r Host) -> Self {
        let mut top = Map::new();
        for (k, v) in &host.vars {
            top.insert(k.clone(), v.clone());
        }
        top.insert("vars".into(), json!(host.vars));
        top.insert(
            "host".into(),
            json!({
                "name": host.name, "address": host.address, "port": host.port,
                "user": host.user, "groups": host.groups, "vars": host.vars,
            }),
        );
        // `hosts` and `groups` hold the whole inventory: moved in (and given back on drop)
        // rather than copied for every host.
        let (hosts, groups) = repo.templates.lend_shared();
        top.insert("hosts".into(), hosts);
        top.insert("groups".into(), groups);
        let context = tera::Context::from_value(Value::Object(top)).unwrap_or_default();
        HostCx {
            repo,
            host,
            context,
            via: None,
        }
    }

    /// The host being rendered.
    pub fn host(&self) -> &'r Host {
        self.host
    }

    /// The inventory.
    pub fn inventory(&self) -> &'r Inventory {
        self.repo.inventory
    }

    /// What rendering sees of the repo.
    pub fn repo(&self) -> &RepoView<'r> {
        &self.repo
    }

    /// Marks the resources rendered from now on as expanded from a composite.
    pub fn set_via(&mut self, via: Option<String>) {
        self.via = via;
    }

    /// The origin of a resource declared by `m`.
    pub fn origin(&self, m: &Manifest) -> Origin {
        Origin {
            file: m.file.clone(),
            mark: m.mark,
            via: self.via.clone(),
        }
    }

    /// Renders a template of the repo with the resource's fields and extra variables.
    pub fn render_template(
        &mut self,
        name: &str,
        resource: &Value,
        vars: &Map<String, Value>,
    ) -> Result<Content, RenderFailure> {
        self.context.insert("resource", resource);
        if vars.is_empty() {
            return self.repo.templates.render(name, &self.context, self.host);
        }
        // Lay the extra vars over the host's context and take them off again afterwards, rather
        // than cloning the context: it holds every host and group, so a clone per template made
        // rendering quadratic in the fleet's size.
        let shadowed: Vec<(&String, Option<Value>)> = vars
            .iter()
            .map(|(k, v)| {
                let previous = self.context.remove(k);
                self.context.insert(k.as_str(), v);
                (k, previous)
            })
            .collect();
        let out = self.repo.templates.render(name, &self.context, self.host);
        for (k, previous) in shadowed {
            self.context.remove(k);
            if let Some(p) = previous {
                self.context.insert(k.as_str(), &p);
            }
        }
        out
    }

    /// Renders a short string that may hold Tera expressions (`{{ host.name }}`). The result
    /// is a name (a certificate's common name, a DNS name): one line, no control character,
    /// whatever the variables it reads hold.
    pub fn render_str(&mut self, text: &str) -> Result<String, RenderFailure> {
        if !text.contains("{{") && !text.contains("{%") {
            return Ok(text.to_string());
        }
        let content = self
            .repo
            .templates
            .render_inline(text, &self.context, self.host)?;
        let out = String::from_utf8_lossy(content.bytes()).into_owned();
        if let Err(c) = crate::text::check(&out, crate::text::TextClass::Line) {
            return Err(RenderFailure {
                message: format!("`{text}` renders to `{out}`, which {c}"),
                template: None,
                host: self.host.name.clone(),
                syntax_error: None,
            });
        }
        Ok(out)
    }

    /// Reads a file of the repo as content.
    pub fn read_source(&self, path: &str) -> Result<Content, SourceError> {
        crate::model::values::check_repo_relative(path)?;
        // Resolved again here, not only at validation: what is read is what is pushed.
        let full = self
            .repo
            .confined
            .resolve(std::path::Path::new(path))
            .map_err(|why| SourceError::Confined {
                path: path.to_string(),
                why,
            })?;
        std::fs::read(full)
            .map(Content::plain)
            .map_err(|source| SourceError::Io {
                path: path.to_string(),
                source,
            })
    }

    /// Decrypts a secret.
    pub fn secret(&self, name: &str) -> Result<SecretValue, SecretError> {
        self.repo.secret(name)
    }

    /// The certificate of a CA (PEM).
    pub fn ca_certificate(&self, ca: &str) -> Result<Content, UnknownCa> {
        self.repo
            .ca_certificates
            .get(ca)
            .cloned()
            .ok_or_else(|| UnknownCa(ca.to_string()))
    }
}

impl Drop for HostCx<'_> {
    fn drop(&mut self) {
        // Every insert into the context keeps `hosts` and `groups` as they were lent: host vars
        // go in before them and template vars are taken off again after each render.
        if let (Some(hosts), Some(groups)) =
            (self.context.remove("hosts"), self.context.remove("groups"))
        {
            self.repo.templates.give_back_shared(hosts, groups);
        }
    }
}
