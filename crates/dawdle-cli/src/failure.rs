//! How a command fails: the message printed after `dawdle: `, read as
//! "failed to …" with the causes of the library's error, and the exit code.

use dawdle::DeferError;

/// A failure that ends the command: its message and exit code.
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) code: u8,
    /// The database could not be reached (worth retrying for a long-running command).
    pub(crate) unreachable: bool,
}

impl Failure {
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn is_unreachable(&self) -> bool {
        self.unreachable
    }

    /// An operational failure (exit 1); `error` is printed with its causes.
    pub(crate) fn from_error(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut message = format!("failed to {error}");
        let mut source = error.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(&format!("\n  caused by: {text}"));
            }
            source = cause.source();
        }
        Self {
            message,
            code: 1,
            unreachable: false,
        }
    }

    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
            unreachable: false,
        }
    }
}

macro_rules! impl_failure_from {
    ($($error:ty),*) => {$(
        impl From<$error> for Failure {
            fn from(error: $error) -> Self {
                Failure::from_error(&error)
            }
        }
    )*};
}
impl From<dawdle::ConnectError> for Failure {
    fn from(error: dawdle::ConnectError) -> Self {
        let unreachable = matches!(error, dawdle::ConnectError::Unreachable { .. });
        Failure {
            unreachable,
            ..Failure::from_error(&error)
        }
    }
}

impl_failure_from!(
    dawdle::schema::SchemaError,
    dawdle::schema::adopt::AdoptError,
    DeferError,
    dawdle::local_pg::LocalPgError,
    dawdle::admin::ChangeError,
    dawdle::admin::QueueError
);

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Failure::new(format!("failed to query the jobs database: {error}"))
    }
}
