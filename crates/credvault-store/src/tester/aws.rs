//! The AWS tester: STS `GetCallerIdentity`, signed with SigV4.

use std::io::Read;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use credvault_audit::TestStatus;
use credvault_schema::{Credential, CredentialType};

use super::http::Pinned;
use super::outbound::{run, Fields};
use super::{outcome, CredentialTester, Outbound, TestOutcome};
use crate::net::Destination;

/// The request body: STS's query API, form-encoded.
const BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
/// Longest response read.
const MAX_BODY: u64 = 64 * 1024;

/// Asks AWS STS who the credential's `access_key_id` and `secret_access_key` (with
/// `session_token` for temporary credentials) belong to. `GetCallerIdentity` needs no
/// permission, so it succeeds for every valid key and changes nothing.
///
/// The request goes to `https://sts.REGION.amazonaws.com/` (`region` field, default
/// `us-east-1`), or to the endpoint given with [`with_endpoint`](Self::with_endpoint) (as
/// the SDKs' `AWS_ENDPOINT_URL_STS` does), checked against the network policy like every
/// tester's destination.
#[derive(Debug, Default)]
pub struct AwsStsTester {
    out: Outbound,
    endpoint: Option<String>,
}

impl AwsStsTester {
    /// A tester connecting where `out` allows, to the region's STS endpoint.
    pub fn new(out: Outbound) -> Self {
        Self {
            out,
            endpoint: None,
        }
    }

    /// Sends the request to `url` instead (a VPC endpoint, a FIPS endpoint, a test server).
    #[must_use]
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }
}

impl CredentialTester for AwsStsTester {
    fn test(&self, _: &CredentialType, credential: &Credential) -> TestOutcome {
        run(|| {
            let f = Fields(credential);
            let key_id = f.text("access_key_id")?;
            let secret = f.secret("secret_access_key")?;
            let token = f.opt_secret("session_token");
            let region = f.opt_text("region").unwrap_or("us-east-1");
            let url = self
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com/"));
            let dest = Destination::check(&url, &self.out.policy, &*self.out.resolver)
                .map_err(|e| outcome(TestStatus::Error, format!("refused: {e}")))?;
            let unsigned = || outcome(TestStatus::Error, "the request could not be signed");
            let identity: Identity =
                Credentials::new(key_id, secret, token.map(str::to_owned), None, "credvault")
                    .into();
            let params = v4::SigningParams::builder()
                .identity(&identity)
                .region(region)
                .name("sts")
                .time(SystemTime::now())
                .settings(SigningSettings::default())
                .build()
                .map_err(|_| unsigned())?
                .into();
            let content_type = "application/x-www-form-urlencoded; charset=utf-8";
            let headers = [("content-type", content_type)];
            let signable = SignableRequest::new(
                "POST",
                dest.url().as_str(),
                headers.into_iter(),
                SignableBody::Bytes(BODY.as_bytes()),
            )
            .map_err(|_| unsigned())?;
            let (instructions, _) = sign(signable, &params)
                .map_err(|_| unsigned())?
                .into_parts();
            let mut request = Pinned::agent(&dest, self.out.timeout)
                .request_url("POST", dest.url())
                .set("content-type", content_type);
            for (name, value) in instructions.headers() {
                request = request.set(name, value);
            }
            let (code, response) = match request.send_string(BODY) {
                Ok(r) => (r.status(), r),
                Err(ureq::Error::Status(code, r)) => (code, r),
                Err(ureq::Error::Transport(t)) => {
                    return Err(outcome(
                        TestStatus::Error,
                        format!("could not reach STS ({})", t.kind()),
                    ))
                }
            };
            let mut body = String::new();
            let _ = response
                .into_reader()
                .take(MAX_BODY)
                .read_to_string(&mut body);
            Ok(match code {
                200 => match element(&body, "Arn") {
                    Some(arn) => outcome(TestStatus::Ok, format!("the key belongs to {arn}")),
                    None => outcome(TestStatus::Failed, "HTTP 200 but no Arn in the answer"),
                },
                400..=499 => outcome(
                    TestStatus::Failed,
                    format!(
                        "STS rejected the key ({})",
                        element(&body, "Code").unwrap_or("HTTP error")
                    ),
                ),
                _ => outcome(TestStatus::Error, format!("STS answered HTTP {code}")),
            })
        })
    }
}

/// The text of the first `<name>` element, if it is plain text of a sane length (the answer's
/// `Arn` or error `Code`: no markup, nothing to unescape).
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let len = xml[start..].find(&format!("</{name}>"))?;
    let text = xml[start..start + len].trim();
    (!text.is_empty()
        && text.len() <= 2048
        && text
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'&'))
    .then_some(text)
}
