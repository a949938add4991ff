//! One error type for everything a user can hit: a kind (which decides the exit code), a
//! sentence saying what happened, and a hint saying what to do. Secrets never go in.

use std::fmt;

/// Failure classes and their exit codes (sysexits-style, so they never collide with the
/// small codes remote commands return through `ssmcp exec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad command line or arguments.
    Usage,
    /// Credentials missing/expired or an IAM policy denies an action.
    Auth,
    /// The instance is unknown, offline, or not managed by SSM.
    Target,
    /// AWS endpoints could not be reached, or throttled us past retries.
    Unavailable,
    /// The session or transfer failed: connection lost, integrity check failed.
    Transfer,
    /// The destination could not be written: permission denied, disk full, read-only
    /// (on the instance for uploads, locally for downloads).
    Write,
    /// The agent or gateway broke the protocol (or asked for something unsupported).
    Protocol,
    /// SIGINT / SIGTERM.
    Interrupted,
}

impl Kind {
    /// Every kind, for documentation checks.
    pub const ALL: [Kind; 8] = [
        Kind::Usage,
        Kind::Auth,
        Kind::Target,
        Kind::Unavailable,
        Kind::Transfer,
        Kind::Write,
        Kind::Protocol,
        Kind::Interrupted,
    ];

    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Usage => 64,
            Kind::Target => 68,
            Kind::Unavailable => 69,
            Kind::Transfer => 74,
            Kind::Write => 73,
            Kind::Protocol => 76,
            Kind::Auth => 77,
            Kind::Interrupted => 130,
        }
    }
}

/// What to do after a digest mismatch, whichever side found it.
pub const DAMAGED: &str =
    "the bytes were damaged on the way; nothing was put in place, run the copy again";

/// A command-line flag that advice from below the command line may point to. Layers under
/// `cli` name flags only through this, and a test in cli.rs proves that each one is a
/// flag clap really accepts, so renaming a flag cannot leave advice naming the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    Region,
    Profile,
    EndpointUrl,
    Bucket,
    BucketRegion,
    Parallel,
    Transport,
    Document,
    Sudo,
    MaxErrors,
    MaxConcurrency,
    Exclude,
    Sync,
    Recursive,
    Compress,
}

impl Flag {
    pub const ALL: [Flag; 15] = [
        Flag::Region,
        Flag::Profile,
        Flag::EndpointUrl,
        Flag::Bucket,
        Flag::BucketRegion,
        Flag::Parallel,
        Flag::Transport,
        Flag::Document,
        Flag::Sudo,
        Flag::MaxErrors,
        Flag::MaxConcurrency,
        Flag::Exclude,
        Flag::Sync,
        Flag::Recursive,
        Flag::Compress,
    ];

    /// The long name, without the dashes.
    pub fn long(self) -> &'static str {
        match self {
            Flag::Region => "region",
            Flag::Profile => "profile",
            Flag::EndpointUrl => "endpoint-url",
            Flag::Bucket => "bucket",
            Flag::BucketRegion => "bucket-region",
            Flag::Parallel => "parallel",
            Flag::Transport => "transport",
            Flag::Document => "document",
            Flag::Sudo => "sudo",
            Flag::MaxErrors => "max-errors",
            Flag::MaxConcurrency => "max-concurrency",
            Flag::Exclude => "exclude",
            Flag::Sync => "sync",
            Flag::Recursive => "recursive",
            Flag::Compress => "compress",
        }
    }

    /// The one-letter form, for the flags scp users know by it.
    pub fn short(self) -> Option<char> {
        match self {
            Flag::Recursive => Some('r'),
            Flag::Compress => Some('C'),
            _ => None,
        }
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.short() {
            Some(c) => write!(f, "-{c}"),
            None => write!(f, "--{}", self.long()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    pub hint: Option<String>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    pub fn usage(message: impl Into<String>) -> Error {
        Error::new(Kind::Usage, message)
    }

    pub fn transfer(message: impl Into<String>) -> Error {
        Error::new(Kind::Transfer, message)
    }

    pub fn protocol(message: impl Into<String>) -> Error {
        Error::new(Kind::Protocol, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod kind_tests {
    use super::Kind;

    #[test]
    fn all_lists_every_kind_once() {
        // A new kind breaks this exhaustive match until it is added to ALL as well.
        fn position(k: Kind) -> usize {
            match k {
                Kind::Usage => 0,
                Kind::Auth => 1,
                Kind::Target => 2,
                Kind::Unavailable => 3,
                Kind::Transfer => 4,
                Kind::Write => 5,
                Kind::Protocol => 6,
                Kind::Interrupted => 7,
            }
        }
        for (i, k) in Kind::ALL.iter().enumerate() {
            assert_eq!(position(*k), i);
        }
    }
}
