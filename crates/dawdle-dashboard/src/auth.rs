//! HTTP basic authentication for every page, from the environment.

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::Router;
use base64::Engine as _;

/// A user name and password the browser is asked for.
#[derive(Clone)]
pub struct BasicAuth {
    user: String,
    password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

impl BasicAuth {
    /// Credentials; both must be non-empty.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Result<Self, String> {
        let (user, password) = (user.into(), password.into());
        if user.is_empty() || password.is_empty() || user.contains(':') {
            return Err(
                "dashboard credentials need a user name (without ':') and a non-empty password"
                    .to_string(),
            );
        }
        Ok(Self { user, password })
    }

    /// From `DAWDLE_DASHBOARD_USER` and `DAWDLE_DASHBOARD_PASSWORD`: `None`
    /// when neither is set, an error when only one is.
    pub fn from_env() -> Result<Option<Self>, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (
            var("DAWDLE_DASHBOARD_USER"),
            var("DAWDLE_DASHBOARD_PASSWORD"),
        ) {
            (None, None) => Ok(None),
            (Some(user), Some(password)) => Self::new(user, password).map(Some),
            _ => Err(
                "set both DAWDLE_DASHBOARD_USER and DAWDLE_DASHBOARD_PASSWORD, or neither"
                    .to_string(),
            ),
        }
    }

    /// Whether an `Authorization` header value carries these credentials.
    fn admits(&self, header: &str) -> bool {
        let Some(encoded) = header.strip_prefix("Basic ") else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let expected = format!("{}:{}", self.user, self.password);
        constant_time_eq(&decoded, expected.as_bytes())
    }
}

/// The authenticated user's name, for the log of actions.
#[derive(Debug, Clone)]
pub(crate) struct User(pub(crate) String);

/// Compares without stopping at the first difference.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `router` with every request checked against `auth`.
pub(crate) fn protect(router: Router, auth: BasicAuth) -> Router {
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let auth = auth.clone();
            async move {
                let admitted = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok())
                    .is_some_and(|value| auth.admits(value));
                if admitted {
                    let mut request = request;
                    request.extensions_mut().insert(User(auth.user.clone()));
                    next.run(request).await
                } else {
                    (
                        StatusCode::UNAUTHORIZED,
                        [(
                            header::WWW_AUTHENTICATE,
                            "Basic realm=\"dawdle\", charset=\"UTF-8\"",
                        )],
                        "authentication required\n",
                    )
                        .into_response()
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_credentials_are_admitted() {
        let auth = BasicAuth::new("ops", "s3cret").unwrap();
        let header = |text: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(text)
            )
        };
        assert!(auth.admits(&header("ops:s3cret")));
        for wrong in ["ops:s3cre", "ops:s3cret ", "op:s3cret", "", ":"] {
            assert!(!auth.admits(&header(wrong)), "{wrong:?}");
        }
        assert!(!auth.admits("Bearer ops:s3cret"));
        assert!(!auth.admits("Basic not-base64!"));
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
