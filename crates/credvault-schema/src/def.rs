//! Credential type definitions as written in JSON (format: `docs/formats.md`, "Credential type
//! definition v1"). These are plain data; [`Registry`](crate::Registry) checks and compiles
//! them into [`CredentialType`](crate::CredentialType)s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A credential type as written: what fields a credential of this type has, how to test it,
/// and how it goes into an HTTP request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeDef {
    /// Stable id: lower-case letters, digits and `_`, starting with a letter (e.g. `postgres`).
    pub name: String,
    /// Name shown to people.
    pub display_name: String,
    /// Broad category, for grouping in user interfaces.
    #[serde(default)]
    pub category: Category,
    /// One or two sentences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Icon name or URL, for user interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    /// Where the service documents these credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documentation_url: Option<String>,
    /// Another type whose fields, test and authentication this one inherits. A field here with
    /// the same key replaces the inherited one in place; new fields are appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// The fields, in display order.
    #[serde(default)]
    pub fields: Vec<FieldDef>,
    /// How to check that a credential works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<TestDef>,
    /// How a credential's values go into an HTTP request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticate: Option<AuthDef>,
}

/// Broad category of a credential type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Category {
    /// Databases and caches.
    Database,
    /// HTTP APIs.
    Api,
    /// AI and LLM providers.
    Ai,
    /// Cloud and infrastructure (keys, SSH, mail servers).
    Infrastructure,
    /// Website logins.
    Website,
    /// Anything else.
    #[default]
    Other,
}

impl Category {
    /// The category's name as written.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Database => "database",
            Self::Api => "api",
            Self::Ai => "ai",
            Self::Infrastructure => "infrastructure",
            Self::Website => "website",
            Self::Other => "other",
        }
    }
}

/// The kind of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FieldKind {
    /// Text.
    String,
    /// Secret text: write-only, masked, held in a secret type.
    Password,
    /// A number: an integer if `integer` is set, else any finite number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// One of the values listed in `options`.
    Options,
    /// Filled in by the system rather than typed by a person (a refreshed access token, an
    /// expiry time). Never required from users; may be `expirable` and `secret`.
    Hidden,
}

impl FieldKind {
    /// The kind's name as written.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Password => "password",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Options => "options",
            Self::Hidden => "hidden",
        }
    }
}

/// A named format a text (or, for `port`, number) field must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Format {
    /// An absolute URL with a scheme and a host (`https://api.example.com/v1`).
    Url,
    /// An email address (`name@example.com`).
    Email,
    /// A DNS host name or an IPv4 address.
    Hostname,
    /// A TCP port, 1 to 65535.
    Port,
    /// Base32 text as authenticator apps show it (letters A–Z and digits 2–7, any case, with
    /// optional spaces, dashes and `=` padding).
    Base32,
    /// A PEM block (`-----BEGIN ...-----` ... `-----END ...-----`).
    Pem,
}

impl Format {
    /// The format's name as written.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Url => "url",
            Self::Email => "email",
            Self::Hostname => "hostname",
            Self::Port => "port",
            Self::Base32 => "base32",
            Self::Pem => "pem",
        }
    }
}

/// One field of a credential type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    /// Key in the credential's JSON (letters, digits and `_`, starting with a letter).
    pub key: String,
    /// Label shown to people.
    pub label: String,
    /// The field's kind.
    pub kind: FieldKind,
    /// Whether a value must be given (a field with a default is satisfied by the default).
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    /// Value used when none is given. Must itself satisfy the field's rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// Example shown in an empty input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
    /// Help text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Secret beyond `password`: held in a secret type, masked, write-only. Allowed on
    /// `string` and `hidden` fields (`password` is always secret).
    #[serde(default, skip_serializing_if = "is_false")]
    pub secret: bool,
    /// For `number`: whole numbers only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub integer: bool,
    /// For `hidden`: the value expires and is refreshed by the system.
    #[serde(default, skip_serializing_if = "is_false")]
    pub expirable: bool,
    /// Accept a value of another JSON type and convert it: `"5432"` for a number, `"true"` for
    /// a boolean, a number or boolean for text. Off by default: types are strict.
    #[serde(default, skip_serializing_if = "is_false")]
    pub coerce: bool,
    /// For `options`: the allowed values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// A regular expression (Rust `regex` syntax) the text must contain a match of; anchor it
    /// with `^...$` to match the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Minimum length in characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u32>,
    /// Maximum length in characters (at most the global limit, 65,536).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// Minimum value (numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Maximum value (numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// A named format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// Where a secret field's value may go ([`RevealPolicy`]); default: `write-only` for a
    /// `base32` secret (an authenticator key: only codes come out), else `revealable`.
    /// Meaningless for a field that is not secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reveal: Option<RevealPolicy>,
}

impl FieldDef {
    /// The field's reveal policy, its default filled in.
    pub fn reveal_policy(&self) -> RevealPolicy {
        match self.reveal {
            Some(p) => p,
            None if (self.secret || self.kind == FieldKind::Password)
                && self.format == Some(Format::Base32) =>
            {
                RevealPolicy::WriteOnly
            }
            None => RevealPolicy::Revealable,
        }
    }
}

/// Where a secret field's value may go once stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevealPolicy {
    /// Returned by `reveal`, and usable by processes.
    Revealable,
    /// Reaches a process only (`credvault run`/`inject`, the proxy, a login callback: the
    /// store's `reveal_many`), never returned by `reveal`.
    UseOnly,
    /// Never leaves the vault; only values derived from it do (TOTP codes).
    WriteOnly,
}

impl RevealPolicy {
    /// The policy's name as written in definitions.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Revealable => "revealable",
            Self::UseOnly => "use-only",
            Self::WriteOnly => "write-only",
        }
    }

    /// The policy named `name` as written in definitions ([`as_str`](Self::as_str)).
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Revealable, Self::UseOnly, Self::WriteOnly]
            .into_iter()
            .find(|p| p.as_str() == name)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// How to check that a credential works.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestDef {
    /// Which tester runs it.
    pub kind: TestKind,
    /// For `http`: the request to send (after `{{field}}` templates are filled in; the type's
    /// `authenticate` is applied too unless `authenticate` is `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HttpRequestDef>,
    /// For `http`: what counts as success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<SuccessDef>,
}

/// Which tester checks a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TestKind {
    /// An HTTP request (`request` and `success`).
    Http,
    /// Connect and authenticate to PostgreSQL (fields `host`, `port`, `database`, `user`,
    /// `password`).
    Postgres,
    /// Connect and authenticate to MySQL (same fields).
    Mysql,
    /// Connect, `AUTH` and `PING` Redis.
    Redis,
    /// Connect to MongoDB with the connection string and run `ping`.
    Mongodb,
    /// Connect and log in to an SMTP server.
    Smtp,
    /// Connect and authenticate to an SSH server.
    Ssh,
    /// AWS STS `GetCallerIdentity` (SigV4-signed).
    AwsSts,
}

impl TestKind {
    /// The kind's name as written.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::Redis => "redis",
            Self::Mongodb => "mongodb",
            Self::Smtp => "smtp",
            Self::Ssh => "ssh",
            Self::AwsSts => "aws_sts",
        }
    }
}

/// An HTTP request template. Every string may hold `{{field}}` placeholders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequestDef {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE` or `HEAD`.
    #[serde(default = "default_method")]
    pub method: String,
    /// The URL.
    pub url: String,
    /// Extra headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Query parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// Body parameters, sent as `body_format`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub body: BTreeMap<String, String>,
    /// `json` (default) or `form`.
    #[serde(default)]
    pub body_format: BodyFormat,
    /// Whether the type's `authenticate` is applied to this request (default `true`).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub authenticate: bool,
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_true() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// How body parameters are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BodyFormat {
    /// A JSON object of strings.
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
}

/// What makes an HTTP test succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuccessDef {
    /// Accepted status codes (default: 200).
    #[serde(default = "default_status")]
    pub status: Vec<u16>,
    /// A dotted path (`data.0.id`) that must exist in the JSON response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
}

fn default_status() -> Vec<u16> {
    vec![200]
}

/// How a credential goes into an HTTP request. Every string (header names included) may hold
/// `{{field}}` placeholders; a placeholder for an optional field that is not set renders empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthDef {
    /// Headers to add.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Query parameters to add.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// Body parameters to add.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub body: BTreeMap<String, String>,
    /// HTTP basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuthDef>,
}

/// HTTP basic authentication templates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthDef {
    /// User name template.
    pub username: String,
    /// Password template.
    pub password: String,
}
