//! The registry: built-in types and user types loaded from JSON, with `extends` resolved.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use crate::compile::CredentialType;
use crate::def::TypeDef;
use crate::error::{cut, DefinitionError};

/// Most types a registry holds.
pub const MAX_TYPES: usize = 1024;
/// Largest type definition read from text or a file.
pub const MAX_DEFINITION_BYTES: usize = 256 * 1024;
/// Longest `extends` chain.
pub const MAX_EXTENDS_DEPTH: usize = 8;

/// The built-in catalog, one JSON definition per type (`crates/credvault-schema/catalog/`).
const BUILTIN: &[&str] = &[
    include_str!("../catalog/postgres.json"),
    include_str!("../catalog/mysql.json"),
    include_str!("../catalog/redis.json"),
    include_str!("../catalog/mongodb.json"),
    include_str!("../catalog/http_basic_auth.json"),
    include_str!("../catalog/http_bearer_token.json"),
    include_str!("../catalog/http_header_auth.json"),
    include_str!("../catalog/oauth2_client_credentials.json"),
    include_str!("../catalog/oauth2_token.json"),
    include_str!("../catalog/aws_access_key.json"),
    include_str!("../catalog/smtp.json"),
    include_str!("../catalog/ssh_private_key.json"),
    include_str!("../catalog/openai_api_key.json"),
    include_str!("../catalog/llm_api_key.json"),
    include_str!("../catalog/anthropic_api_key.json"),
    include_str!("../catalog/website_login.json"),
    include_str!("../catalog/hotp_key.json"),
    include_str!("../catalog/totp_key.json"),
    include_str!("../catalog/transit_key.json"),
    include_str!("../catalog/kv_secret.json"),
    include_str!("../catalog/http_proxy.json"),
    include_str!("../catalog/imap_mailbox.json"),
];

/// Credential types by name. Built-in and user types live side by side; names are unique.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    types: BTreeMap<String, Arc<CredentialType>>,
    /// The definitions as written (before `extends` is merged), for children to inherit from.
    raw: HashMap<String, TypeDef>,
    builtin: Vec<String>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding the built-in catalog.
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        let defs: Vec<TypeDef> = BUILTIN
            .iter()
            .filter_map(|text| serde_json::from_str(text).ok())
            .collect();
        // The catalog is checked by the test suite; a broken entry would be missing, not fatal.
        let _ = r.add_all(defs);
        r.builtin = r.types.keys().cloned().collect();
        r
    }

    /// Names of the built-in types.
    pub fn builtin_names(&self) -> &[String] {
        &self.builtin
    }

    /// Parses a definition from JSON text and adds it.
    ///
    /// # Errors
    /// [`DefinitionError`] if the text is too large, not a definition, or the type is invalid.
    pub fn add_json(&mut self, text: &str) -> Result<Arc<CredentialType>, DefinitionError> {
        let def = parse_definition(text)?;
        self.add(def)
    }

    /// Reads a definition file (JSON) and adds it.
    ///
    /// # Errors
    /// As [`add_json`](Self::add_json), and when the file cannot be read.
    pub fn add_file(&mut self, path: &Path) -> Result<Arc<CredentialType>, DefinitionError> {
        let meta = std::fs::metadata(path).map_err(|e| {
            DefinitionError::new("?", path.display().to_string(), format!("cannot read: {e}"))
        })?;
        if meta.len() > MAX_DEFINITION_BYTES as u64 {
            return Err(DefinitionError::new(
                "?",
                path.display().to_string(),
                format!("larger than {MAX_DEFINITION_BYTES} bytes"),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            DefinitionError::new("?", path.display().to_string(), format!("cannot read: {e}"))
        })?;
        self.add_json(&text)
    }

    /// Adds a definition. Its `extends` parent must already be in the registry.
    ///
    /// # Errors
    /// [`DefinitionError`]: invalid type, duplicate name, unknown parent, registry full.
    pub fn add(&mut self, def: TypeDef) -> Result<Arc<CredentialType>, DefinitionError> {
        if self.types.contains_key(&def.name) {
            return Err(DefinitionError::new(
                &def.name,
                "name",
                "a type with this name exists",
            ));
        }
        if self.types.len() >= MAX_TYPES {
            return Err(DefinitionError::new(
                &def.name,
                "name",
                format!("the registry holds {MAX_TYPES} types already"),
            ));
        }
        let merged = self.merge(&def)?;
        let compiled = CredentialType::compile(merged)?;
        self.raw.insert(def.name.clone(), def);
        self.types
            .insert(compiled.name().to_owned(), Arc::clone(&compiled));
        Ok(compiled)
    }

    /// Adds several definitions that may extend each other, in any order. Cycles are refused.
    /// Nothing is added unless all are valid.
    ///
    /// # Errors
    /// The first [`DefinitionError`] found.
    pub fn add_all(
        &mut self,
        defs: Vec<TypeDef>,
    ) -> Result<Vec<Arc<CredentialType>>, DefinitionError> {
        let mut pending: BTreeMap<String, TypeDef> = BTreeMap::new();
        for d in defs {
            if pending.contains_key(&d.name) {
                return Err(DefinitionError::new(&d.name, "name", "defined twice"));
            }
            pending.insert(d.name.clone(), d);
        }
        // Order parents before children; a walk that meets a name on its own path is a cycle.
        let mut order: Vec<String> = Vec::new();
        let mut state: HashMap<String, u8> = HashMap::new(); // 1 = on path, 2 = done
        for name in pending.keys() {
            let mut path: Vec<String> = Vec::new();
            let mut cur = Some(name.clone());
            while let Some(n) = cur.take() {
                match state.get(&n) {
                    Some(2) => break,
                    Some(_) => {
                        let start = path.iter().position(|p| *p == n).unwrap_or(0);
                        let mut cycle: Vec<&str> = path[start..].iter().map(|s| cut(s)).collect();
                        cycle.push(cut(&n));
                        return Err(DefinitionError::new(
                            &n,
                            "extends",
                            format!("inheritance cycle: {}", cycle.join(" -> ")),
                        ));
                    }
                    None => {}
                }
                state.insert(n.clone(), 1);
                path.push(n.clone());
                cur = pending
                    .get(&n)
                    .and_then(|d| d.extends.clone())
                    .filter(|p| pending.contains_key(p));
            }
            for n in path.into_iter().rev() {
                state.insert(n.clone(), 2);
                order.push(n);
            }
        }
        let mut staged = self.clone();
        let mut added = Vec::new();
        for name in order {
            if let Some(def) = pending.remove(&name) {
                added.push(staged.add(def)?);
            }
        }
        *self = staged;
        Ok(added)
    }

    /// The type named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<CredentialType>> {
        self.types.get(name)
    }

    /// All types, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<CredentialType>> {
        self.types.values()
    }

    /// Number of types.
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// Whether the registry is empty.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// The definition with its parents' fields, test and authentication merged in.
    fn merge(&self, def: &TypeDef) -> Result<TypeDef, DefinitionError> {
        let mut chain = vec![def.clone()];
        let mut cur = def.extends.clone();
        while let Some(parent) = cur {
            if chain.len() > MAX_EXTENDS_DEPTH {
                return Err(DefinitionError::new(
                    &def.name,
                    "extends",
                    format!("inheritance deeper than {MAX_EXTENDS_DEPTH}"),
                ));
            }
            if parent == def.name || chain.iter().any(|d| d.name == parent) {
                return Err(DefinitionError::new(
                    &def.name,
                    "extends",
                    "inheritance cycle",
                ));
            }
            let Some(p) = self.raw.get(&parent) else {
                return Err(DefinitionError::new(
                    &def.name,
                    "extends",
                    format!("unknown parent type `{}`", cut(&parent)),
                ));
            };
            cur = p.extends.clone();
            chain.push(p.clone());
        }
        // Root first; each child overrides.
        let mut merged = match chain.pop() {
            Some(root) => root,
            None => return Ok(def.clone()),
        };
        while let Some(child) = chain.pop() {
            let mut fields = merged.fields;
            for f in child.fields {
                match fields.iter_mut().find(|g| g.key == f.key) {
                    Some(slot) => *slot = f,
                    None => fields.push(f),
                }
            }
            merged = TypeDef {
                fields,
                test: child.test.or(merged.test),
                authenticate: child.authenticate.or(merged.authenticate),
                description: child.description.or(merged.description),
                icon: child.icon.or(merged.icon),
                documentation_url: child.documentation_url.or(merged.documentation_url),
                ..child
            };
        }
        Ok(merged)
    }
}

/// Parses a type definition from JSON text (at most [`MAX_DEFINITION_BYTES`]).
///
/// # Errors
/// [`DefinitionError`] naming the position of a syntax error or the unknown/missing key.
pub fn parse_definition(text: &str) -> Result<TypeDef, DefinitionError> {
    if text.len() > MAX_DEFINITION_BYTES {
        return Err(DefinitionError::new(
            "?",
            "",
            format!("definition larger than {MAX_DEFINITION_BYTES} bytes"),
        ));
    }
    serde_json::from_str(text).map_err(|e| {
        // serde's messages name keys and expected types, not values of credentials (a
        // definition holds none).
        DefinitionError::new(
            "?",
            format!("line {} column {}", e.line(), e.column()),
            e.to_string(),
        )
    })
}
