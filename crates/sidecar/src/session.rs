//! The sidecar's session credentials: obtained from the central Lakegate with the pod's identity token, kept
//! fresh, and renewed as soon as the token file changes (projected service-account tokens rotate).
//!
//! One background task owns the refresh; requests only read the latest state. A failed refresh keeps the
//! credentials already held until they expire (they were issued legitimately and the central Lakegate still
//! checks every request against live policy), then requests fail with the reason.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::watch;

use super::upstream::{Upstream, UpstreamError};
use lakegate_s3_protocol::sigv4::{SecretKey, StoreCredentials};

// RFC 8693's names, as the central token endpoint expects them. The sidecar is a client of that protocol; it
// does not link the token service that answers it.
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Refresh at the latest this long before expiry (or a fifth of the lifetime, if shorter).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Longest wait between retries after a failed refresh.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a request waits for the very first credentials.
const FIRST_CREDENTIALS_WAIT: Duration = Duration::from_secs(15);

/// How the sidecar asks for credentials.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub token_file: PathBuf,
    /// The central Lakegate's STS (its S3 endpoint).
    pub sts: url::Url,
    pub role_arn: String,
    pub session_name: String,
    pub duration_seconds: Option<u32>,
    pub exchange: Option<ExchangeClient>,
    /// How often the token file is re-read.
    pub token_poll: Duration,
}

/// A token exchange before STS, so that the central Lakegate names this workload as the actor for the user
/// whose token the pod holds.
#[derive(Debug, Clone)]
pub struct ExchangeClient {
    pub token_endpoint: url::Url,
    pub actor: ActorCredentials,
}

/// How the workload proves who it is at the token endpoint.
#[derive(Clone)]
pub enum ActorCredentials {
    /// A confidential client of the token service.
    Client { id: String, secret: String },
    /// The workload's own token from a trusted issuer (e.g. its projected service-account token), re-read for
    /// every exchange since it rotates too.
    TokenFile(PathBuf),
}

impl std::fmt::Debug for ActorCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Client { id, .. } => f.debug_struct("Client").field("id", id).finish_non_exhaustive(),
            Self::TokenFile(path) => f.debug_tuple("TokenFile").field(path).finish(),
        }
    }
}

/// Session credentials held by the sidecar.
#[derive(Debug)]
pub struct Credentials {
    pub store: StoreCredentials,
    pub obtained_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// Who the central Lakegate says they belong to (`SubjectFromWebIdentityToken`), for logs.
    pub subject: String,
}

impl Credentials {
    /// When to renew: a fifth of the lifetime or [`REFRESH_MARGIN`] before expiry, whichever is shorter.
    pub fn refresh_at(&self) -> OffsetDateTime {
        let lifetime = self.expires_at - self.obtained_at;
        let margin = std::cmp::min(lifetime / 5, time::Duration::try_from(REFRESH_MARGIN).unwrap_or(lifetime / 5));
        self.expires_at - margin
    }

    fn usable(&self, now: OffsetDateTime) -> bool {
        now < self.expires_at
    }
}

/// Why there are no usable credentials.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    /// The central Lakegate refused the token (invalid, expired, not allowed the role, ...).
    #[error("the central Lakegate refused the identity token: {0}")]
    Refused(String),
    /// The token file could not be read.
    #[error("cannot read the identity token file: {0}")]
    TokenFile(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// An answer that is not what the protocol says.
    #[error("unexpected answer from the central Lakegate: {0}")]
    Protocol(String),
    #[error("no credentials yet: the first request for them has not completed")]
    NotYet,
}

#[derive(Debug, Clone, Default)]
struct State {
    current: Option<Arc<Credentials>>,
    fault: Option<SessionError>,
    /// Whether at least one attempt has completed.
    settled: bool,
}

/// The credentials as requests see them.
#[derive(Debug, Clone)]
pub struct Session {
    state: watch::Receiver<State>,
}

impl Session {
    /// Starts the refresh task and returns the view requests use.
    pub fn start(config: SessionConfig, upstream: Upstream) -> Self {
        let (tx, rx) = watch::channel(State::default());
        tokio::spawn(refresh_loop(config, upstream, tx));
        Self { state: rx }
    }

    /// The current credentials, waiting a little for the first ones after start-up.
    pub async fn credentials(&self) -> Result<Arc<Credentials>, SessionError> {
        let mut rx = self.state.clone();
        let state = match tokio::time::timeout(FIRST_CREDENTIALS_WAIT, rx.wait_for(|s| s.settled)).await {
            Ok(Ok(state)) => state.clone(),
            _ => return Err(SessionError::NotYet),
        };
        match state.current {
            Some(c) if c.usable(OffsetDateTime::now_utc()) => Ok(c),
            _ => Err(state.fault.unwrap_or(SessionError::NotYet)),
        }
    }
}

async fn refresh_loop(config: SessionConfig, upstream: Upstream, tx: watch::Sender<State>) {
    let mut held_token: Option<[u8; 32]> = None;
    let mut backoff = Duration::from_secs(1);
    loop {
        if tx.is_closed() {
            return;
        }
        let now = OffsetDateTime::now_utc();
        let current = tx.borrow().current.clone();
        let token = read_token(&config.token_file).await;
        let digest = token.as_ref().ok().map(|t| -> [u8; 32] { Sha256::digest(t.as_bytes()).into() });
        let due = match (&current, digest) {
            (None, _) => true,
            (Some(c), Some(d)) => held_token != Some(d) || now >= c.refresh_at(),
            (Some(c), None) => now >= c.refresh_at(),
        };
        if !due {
            tokio::time::sleep(config.token_poll).await;
            continue;
        }
        let outcome = match token {
            Ok(token) => obtain(&config, &upstream, &token).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(credentials) => {
                tracing::info!(
                    subject = %credentials.subject,
                    access_key_id = %credentials.store.access_key_id,
                    expires = %credentials.expires_at,
                    "sidecar credentials obtained"
                );
                held_token = digest;
                backoff = Duration::from_secs(1);
                tx.send_replace(State { current: Some(Arc::new(credentials)), fault: None, settled: true });
                tokio::time::sleep(config.token_poll).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "could not obtain sidecar credentials");
                let kept = current.filter(|c| c.usable(OffsetDateTime::now_utc()));
                tx.send_replace(State { current: kept, fault: Some(e), settled: true });
                tokio::time::sleep(backoff).await;
                backoff = std::cmp::min(backoff * 2, MAX_BACKOFF);
            }
        }
    }
}

async fn read_token(path: &std::path::Path) -> Result<String, SessionError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| SessionError::TokenFile(format!("{}: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(SessionError::TokenFile(format!("{} is empty", path.display())));
    }
    Ok(token.to_owned())
}

/// Token (optionally exchanged first) -> STS `AssumeRoleWithWebIdentity` -> credentials.
async fn obtain(config: &SessionConfig, upstream: &Upstream, token: &str) -> Result<Credentials, SessionError> {
    let token = match &config.exchange {
        Some(client) => exchange(client, upstream, token).await?,
        None => token.to_owned(),
    };
    let duration = config.duration_seconds.map(|d| d.to_string());
    let mut form = vec![
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", config.role_arn.as_str()),
        ("RoleSessionName", config.session_name.as_str()),
        ("WebIdentityToken", token.as_str()),
    ];
    if let Some(d) = &duration {
        form.push(("DurationSeconds", d));
    }
    let obtained_at = OffsetDateTime::now_utc();
    let (status, body) = upstream.post_form(&config.sts, &form, None).await?;
    if status.is_server_error() {
        return Err(SessionError::Upstream(UpstreamError::Unreachable(format!(
            "STS answered {status}: {}",
            sts_error(&body).unwrap_or_default()
        ))));
    }
    if !status.is_success() {
        return Err(SessionError::Refused(sts_error(&body).unwrap_or_else(|| format!("STS answered {status}"))));
    }
    let answer = parse_credentials(&body)?;
    let expires_at = OffsetDateTime::parse(&answer.expiration, &time::format_description::well_known::Rfc3339)
        .map_err(|_| SessionError::Protocol("Expiration is not an RFC 3339 time".into()))?;
    Ok(Credentials {
        store: StoreCredentials {
            access_key_id: answer.access_key_id,
            secret: SecretKey::new(answer.secret_access_key),
            session_token: Some(answer.session_token),
        },
        obtained_at,
        expires_at,
        subject: answer.subject,
    })
}

/// RFC 8693 exchange at the central token service, the workload authenticated as the actor.
async fn exchange(client: &ExchangeClient, upstream: &Upstream, token: &str) -> Result<String, SessionError> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: String,
    }
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
        #[serde(default)]
        error_description: Option<String>,
    }
    let mut form = vec![("grant_type", GRANT_TYPE), ("subject_token", token), ("subject_token_type", TOKEN_TYPE_JWT)];
    let actor_token;
    let basic = match &client.actor {
        ActorCredentials::Client { id, secret } => Some((id.as_str(), secret.as_str())),
        ActorCredentials::TokenFile(path) => {
            actor_token = read_token(path).await?;
            form.extend([("actor_token", actor_token.as_str()), ("actor_token_type", TOKEN_TYPE_JWT)]);
            None
        }
    };
    let (status, body) = upstream.post_form(&client.token_endpoint, &form, basic).await?;
    if status.is_success() {
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|_| SessionError::Protocol("the token endpoint's answer has no access_token".into()))?;
        return Ok(answer.access_token);
    }
    let reason = serde_json::from_slice::<OAuthError>(&body)
        .map(|e| format!("token exchange: {}: {}", e.error, e.error_description.unwrap_or_default()))
        .unwrap_or_else(|_| format!("token exchange answered {status}"));
    if status.is_server_error() {
        Err(SessionError::Upstream(UpstreamError::Unreachable(reason)))
    } else {
        Err(SessionError::Refused(reason))
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct StsAnswer {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
    subject: String,
}

/// Reads the credentials of an `AssumeRoleWithWebIdentityResponse`.
fn parse_credentials(xml: &[u8]) -> Result<StsAnswer, SessionError> {
    let mut answer = StsAnswer::default();
    lakegate_s3_protocol::xml::leaves(xml, |path, text| {
        match path.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            [_, _, "Credentials", "AccessKeyId"] => answer.access_key_id = text,
            [_, _, "Credentials", "SecretAccessKey"] => answer.secret_access_key = text,
            [_, _, "Credentials", "SessionToken"] => answer.session_token = text,
            [_, _, "Credentials", "Expiration"] => answer.expiration = text,
            [_, _, "SubjectFromWebIdentityToken"] => answer.subject = text,
            _ => {}
        }
        Ok(())
    })
    .map_err(|e| SessionError::Protocol(format!("STS answer: {e}")))?;
    if answer.access_key_id.is_empty()
        || answer.secret_access_key.is_empty()
        || answer.session_token.is_empty()
        || answer.expiration.is_empty()
    {
        return Err(SessionError::Protocol("the STS answer lacks credentials".into()));
    }
    Ok(answer)
}

/// `Code: Message` of an STS `ErrorResponse`, if the body is one.
fn sts_error(xml: &[u8]) -> Option<String> {
    let (mut code, mut message) = (String::new(), String::new());
    lakegate_s3_protocol::xml::leaves(xml, |path, text| {
        match path.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["ErrorResponse", "Error", "Code"] => code = text,
            ["ErrorResponse", "Error", "Message"] => message = text,
            _ => {}
        }
        Ok(())
    })
    .ok()?;
    (!code.is_empty()).then(|| format!("{code}: {message}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn credentials_are_renewed_a_fifth_of_their_lifetime_or_five_minutes_before_expiry() {
        let at = |obtained: i64, expires: i64| Credentials {
            store: StoreCredentials { access_key_id: "A".into(), secret: SecretKey::new("s"), session_token: None },
            obtained_at: OffsetDateTime::from_unix_timestamp(obtained).unwrap(),
            expires_at: OffsetDateTime::from_unix_timestamp(expires).unwrap(),
            subject: "alice".into(),
        };
        // 15 minutes: renewed after 12.
        assert_eq!(at(0, 900).refresh_at().unix_timestamp(), 720);
        // 12 hours: renewed 5 minutes before the end.
        assert_eq!(at(0, 43_200).refresh_at().unix_timestamp(), 42_900);
    }

    #[test]
    fn an_sts_answer_yields_its_credentials_and_an_error_answer_its_code() {
        let ok = br#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
            <AssumeRoleWithWebIdentityResult><SubjectFromWebIdentityToken>alice</SubjectFromWebIdentityToken>
            <Credentials><AccessKeyId>LGK1</AccessKeyId><SecretAccessKey>s&amp;cret</SecretAccessKey>
            <SessionToken>tok</SessionToken><Expiration>2026-11-24T10:00:00Z</Expiration></Credentials>
            </AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"#;
        let answer = parse_credentials(ok).unwrap();
        assert_eq!(answer.access_key_id, "LGK1");
        assert_eq!(answer.secret_access_key, "s&cret");
        assert_eq!(answer.subject, "alice");
        let err = br#"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>
            <Message>expired</Message></Error></ErrorResponse>"#;
        assert!(parse_credentials(err).is_err());
        assert_eq!(sts_error(err).as_deref(), Some("InvalidIdentityToken: expired"));
        assert!(parse_credentials(b"<not xml").is_err());
    }
}
