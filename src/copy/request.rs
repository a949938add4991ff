//! The copy command line resolved once into a validated request: each operand parsed
//! once (a remote one's target into one instance or a fleet), the direction known, and
//! what each transport cannot do written in one table that every choice of transport
//! is checked against before anything is opened.

use crate::aws::target::{Fleet, Target};
use crate::cli::{CopyArgs, TransportChoice};
use crate::copy::transport::s3::S3Options;
use crate::copy::transport::{DownloadSessions, PlaceOptions};
use crate::error::{Error, Result};
use crate::remote::RunAs;
use globset::GlobSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Where the remote side of a copy is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Where {
    One(Target),
    Fleet(Fleet),
}

/// One command-line operand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Operand {
    Local(PathBuf),
    Remote {
        user: Option<String>,
        at: Where,
        path: Vec<u8>,
    },
}

/// `[user@]TARGET:PATH` is remote when TARGET is an instance target (`name:NAME:PATH`
/// included) or a fleet; anything else, or anything starting with `/` or `.`, is a
/// local path. A fleet that is malformed (`i-a,bad`) is an error, not a local name.
pub(crate) fn parse_operand(arg: &OsStr) -> Result<Operand> {
    let b = arg.as_bytes();
    let local = || Ok(Operand::Local(PathBuf::from(arg)));
    if b.starts_with(b"/") || b.starts_with(b".") {
        return local();
    }
    let (user, rest) = match b.iter().position(|&c| c == b'@') {
        Some(at) if !b[..at].contains(&b':') && !b[..at].contains(&b'/') => {
            (Some(&b[..at]), &b[at + 1..])
        }
        _ => (None, b),
    };
    let labelled = [&b"name:"[..], b"tag:"]
        .into_iter()
        .find(|p| rest.starts_with(p));
    let (target, path) = if let Some(label) = labelled {
        let value = &rest[label.len()..];
        match value.iter().position(|&c| c == b':') {
            Some(c) => (&rest[..label.len() + c], &value[c + 1..]),
            None => return local(),
        }
    } else {
        match rest.iter().position(|&c| c == b':') {
            Some(c) => (&rest[..c], &rest[c + 1..]),
            None => return local(),
        }
    };
    let Ok(target) = std::str::from_utf8(target) else {
        return local();
    };
    let at = match Fleet::parse(target) {
        Some(fleet) => Where::Fleet(fleet?),
        None => match Target::parse(target) {
            Ok(t) => Where::One(t),
            Err(_) => return local(),
        },
    };
    let user = user.map(|u| String::from_utf8_lossy(u).into_owned());
    Ok(Operand::Remote {
        user: user.filter(|u| !u.is_empty()),
        at,
        path: if path.is_empty() {
            b"~".to_vec()
        } else {
            path.to_vec()
        },
    })
}

/// Which way the bytes go.
pub enum Direction {
    Upload {
        sources: Vec<PathBuf>,
        /// The remote destination as typed.
        dest: Vec<u8>,
    },
    Download {
        /// Remote paths as typed.
        sources: Vec<Vec<u8>>,
        dest: PathBuf,
    },
}

/// Everything a copy needs to know, checked.
pub struct CopyRequest {
    pub direction: Direction,
    pub at: Where,
    pub run_as: RunAs,
    /// --transport as given.
    pub transport: TransportChoice,
    pub recursive: bool,
    pub place: PlaceOptions,
    pub compress: bool,
    /// `-l`, in bytes per second (scp's is in Kbit/s).
    pub limit: Option<u64>,
    pub exclude_patterns: Vec<String>,
    pub exclude: GlobSet,
    pub sync: bool,
    pub delete: bool,
    pub dry_run: bool,
    /// --parallel: sessions for a download's bytes.
    pub sessions: DownloadSessions,
    /// Rate control for fleets (ssmcp's own for downloads, Run Command's for S3).
    pub max_concurrency: String,
    pub max_errors: String,
    pub s3: S3Options,
    pub json: bool,
    pub quiet: bool,
}

impl CopyRequest {
    pub fn resolve(args: &CopyArgs, quiet: bool) -> Result<CopyRequest> {
        let (direction, at, user) = direction(&args.paths)?;
        if matches!(direction, Direction::Download { .. }) && (args.sync || args.delete) {
            return Err(Error::usage(
                "--sync and --delete apply to uploads; downloads always copy everything",
            ));
        }
        Ok(CopyRequest {
            direction,
            at,
            run_as: match (user, args.sudo) {
                (Some(u), _) => RunAs::Sudo(Some(u)),
                (None, true) => RunAs::Sudo(None),
                (None, false) => RunAs::SessionUser,
            },
            transport: args.transport,
            recursive: args.recursive,
            place: PlaceOptions {
                preserve: args.preserve,
                atomic: args.atomic,
            },
            compress: args.compress,
            limit: args.limit.map(|kbit| kbit * 1000 / 8),
            exclude: crate::copy::local_source::exclusions(&args.exclude)?,
            exclude_patterns: args.exclude.clone(),
            sync: args.sync,
            delete: args.delete,
            dry_run: args.dry_run,
            sessions: args.parallel.map_or(DownloadSessions::Auto, |n| {
                DownloadSessions::AtMost(usize::from(n))
            }),
            max_concurrency: args.max_concurrency.clone(),
            max_errors: args.max_errors.clone(),
            s3: S3Options {
                staging: args.staging.clone(),
                sse_kms_key: args.sse_kms_key.clone(),
                max_concurrency: args.max_concurrency.clone(),
                max_errors: args.max_errors.clone(),
            },
            json: args.json,
            quiet,
        })
    }

    pub fn is_upload(&self) -> bool {
        matches!(self.direction, Direction::Upload { .. })
    }

    /// Which transport carries this copy, and why when the user did not say.
    /// `upload_bytes`: the size of an upload's plan.
    pub fn choose(&self, upload_bytes: u64) -> (Choice, Option<String>) {
        match (self.transport, &self.at) {
            (_, Where::Fleet(_)) if self.is_upload() => (Choice::S3, None),
            (TransportChoice::S3, _) => (Choice::S3, None),
            (TransportChoice::Pty, _) => (Choice::Pty, None),
            (TransportChoice::Stream, _) => (Choice::Stream { fallback: false }, None),
            (TransportChoice::Auto, _)
                if self.is_upload()
                    && self.s3.staging.bucket.is_some()
                    && upload_bytes >= AUTO_S3_BYTES
                    && !self.sync
                    && !self.delete =>
            {
                let why = format!(
                    "transport auto chose s3: {} MiB to upload and a bucket is configured (a session carries about 1 MB/s)",
                    upload_bytes >> 20
                );
                (Choice::S3, Some(why))
            }
            (TransportChoice::Auto, _) => (Choice::Stream { fallback: true }, None),
        }
    }

    /// The transport the user named, if any.
    pub fn asked(&self) -> Option<TransportKind> {
        match self.transport {
            TransportChoice::Auto => None,
            TransportChoice::Stream => Some(TransportKind::Stream),
            TransportChoice::Pty => Some(TransportKind::Pty),
            TransportChoice::S3 => Some(TransportKind::S3),
        }
    }

    /// Refuse what `transport` cannot do for this request (the first refusal that
    /// applies, in the table's order).
    pub fn check(&self, transport: TransportKind) -> Result<()> {
        match REFUSALS
            .iter()
            .find(|r| r.transport == transport && (r.applies)(self))
        {
            None => Ok(()),
            Some(r) => {
                let message = r.message.replace("{transport}", transport.name()).replace(
                    "{fleet}",
                    &match &self.at {
                        Where::Fleet(f) => f.describe(),
                        Where::One(_) => "the instance".to_string(),
                    },
                );
                let e = Error::usage(message);
                Err(match r.hint {
                    Some(h) => e.hint(h),
                    None => e,
                })
            }
        }
    }
}

/// Uploads at least this big go through S3 under `--transport auto` when a bucket is
/// configured: a session carries about 1 MB/s, S3 many times that.
pub(crate) const AUTO_S3_BYTES: u64 = 64 * 1024 * 1024;

/// The transport chosen for a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The receiver over port sessions; `fallback`: the pty transport when the
    /// instance has no python3.
    Stream {
        fallback: bool,
    },
    Pty,
    S3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Stream,
    Pty,
    S3,
}

impl TransportKind {
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Stream => "stream",
            TransportKind::Pty => "pty",
            TransportKind::S3 => "s3",
        }
    }
}

/// Something a transport cannot do, and what the user is told.
struct Refusal {
    transport: TransportKind,
    applies: fn(&CopyRequest) -> bool,
    /// `{transport}` and `{fleet}` are filled in.
    message: &'static str,
    hint: Option<&'static str>,
}

const FLEET_UPLOAD: &str = "an upload to {fleet} goes through S3, not --transport {transport}";
const FLEET_UPLOAD_HINT: &str = "leave out --transport (or use --transport s3) and give --bucket";

/// What each transport cannot do. The stream transport can do everything for one
/// instance; the pty transport is plain shell; S3 has no session to the destination.
const REFUSALS: &[Refusal] = &[
    Refusal {
        transport: TransportKind::Stream,
        applies: |r| r.is_upload() && matches!(r.at, Where::Fleet(_)),
        message: FLEET_UPLOAD,
        hint: Some(FLEET_UPLOAD_HINT),
    },
    Refusal {
        transport: TransportKind::Pty,
        applies: |r| r.is_upload() && matches!(r.at, Where::Fleet(_)),
        message: FLEET_UPLOAD,
        hint: Some(FLEET_UPLOAD_HINT),
    },
    Refusal {
        transport: TransportKind::Pty,
        applies: |r| r.is_upload() && (r.place.atomic || r.sync || r.delete),
        message:
            "--atomic, --sync and --delete need the stream transport (python3 on the instance)",
        hint: None,
    },
    Refusal {
        transport: TransportKind::Pty,
        applies: |r| !r.is_upload() && r.dry_run,
        message: "--dry-run of a download needs the stream transport (python3 on the instance)",
        hint: None,
    },
    Refusal {
        transport: TransportKind::S3,
        applies: |r| r.is_upload() && (r.sync || r.delete),
        message: "--sync and --delete need a session to the instance and do not work through S3",
        hint: Some("copy to one instance with --transport stream, or leave out --sync/--delete"),
    },
    Refusal {
        transport: TransportKind::S3,
        applies: |r| !r.is_upload() && (!r.exclude_patterns.is_empty() || r.dry_run),
        message: "--exclude and --dry-run are not supported for downloads through S3",
        hint: Some("leave out --transport s3; downloads over sessions honour both"),
    },
];

/// A control character in a remote path is almost always a quoting slip (a trailing
/// newline from `$(...)`), and would create a name nobody can type.
fn check_remote_path(path: &[u8]) -> Result<()> {
    if path.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(Error::usage(format!(
            "the remote path {:?} contains a control character",
            String::from_utf8_lossy(path)
        ))
        .hint("check the quoting: a trailing newline often comes from $(...) or a line read from a file"));
    }
    Ok(())
}

/// The direction, the remote side and the remote user, from the operands.
fn direction(paths: &[std::ffi::OsString]) -> Result<(Direction, Where, Option<String>)> {
    let ops = paths
        .iter()
        .map(|p| parse_operand(p))
        .collect::<Result<Vec<Operand>>>()?;
    for op in &ops {
        if let Operand::Remote { path, .. } = op {
            check_remote_path(path)?;
        }
    }
    let Some((dest, sources)) = ops.split_last() else {
        return Err(Error::usage("give at least one source and a destination"));
    };
    let remote_sources = sources
        .iter()
        .filter(|o| matches!(o, Operand::Remote { .. }))
        .count();
    match dest {
        Operand::Remote { user, at, path } => {
            if remote_sources > 0 {
                return Err(Error::usage(
                    "copying from an instance to an instance is not supported",
                )
                .hint("copy to this machine first, then on to the other instance"));
            }
            let sources = sources
                .iter()
                .filter_map(|o| match o {
                    Operand::Local(p) => Some(p.clone()),
                    Operand::Remote { .. } => None,
                })
                .collect();
            let upload = Direction::Upload {
                sources,
                dest: path.clone(),
            };
            Ok((upload, at.clone(), user.clone()))
        }
        Operand::Local(dest) => {
            if remote_sources == 0 {
                return Err(Error::usage("neither side is on an instance")
                    .hint("write the remote side as TARGET:PATH, e.g. i-0123456789abcdef0:/tmp/; for local copies use cp"));
            }
            if remote_sources != sources.len() {
                return Err(Error::usage(
                    "sources must all be local (upload) or all on one instance (download)",
                ));
            }
            let mut side: Option<(&Where, &Option<String>)> = None;
            let mut paths = Vec::new();
            for o in sources {
                if let Operand::Remote { user, at, path } = o {
                    match side {
                        Some((a, u)) if a != at || u != user => {
                            return Err(Error::usage(
                                "all remote sources must be on the same instance, as the same user",
                            ))
                        }
                        _ => side = Some((at, user)),
                    }
                    paths.push(path.clone());
                }
            }
            let Some((at, user)) = side else {
                return Err(Error::usage("neither side is on an instance"));
            };
            let download = Direction::Download {
                sources: paths,
                dest: dest.clone(),
            };
            Ok((download, at.clone(), user.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(user: Option<&str>, target: &str, path: &str) -> Operand {
        Operand::Remote {
            user: user.map(str::to_string),
            at: Where::One(Target::parse(target).unwrap()),
            path: path.as_bytes().to_vec(),
        }
    }

    #[test]
    fn operands_are_remote_only_with_an_instance_target() {
        let p = |s: &str| parse_operand(OsStr::new(s)).unwrap();
        assert_eq!(
            p("i-0123456789abcdef0:/tmp"),
            remote(None, "i-0123456789abcdef0", "/tmp")
        );
        assert_eq!(
            p("app@i-12345678:x"),
            remote(Some("app"), "i-12345678", "x")
        );
        assert_eq!(p("i-12345678:"), remote(None, "i-12345678", "~"));
        assert_eq!(p("name:web-1:/srv"), remote(None, "name:web-1", "/srv"));
        assert_eq!(
            p("i-0123456789abcdef0.eu-west-1.prod:/a:b"),
            remote(None, "i-0123456789abcdef0.eu-west-1.prod", "/a:b")
        );
        for local in [
            "a:b",
            "./i-12345678:x",
            "/i-12345678:x",
            "file",
            "name:web-1",
        ] {
            assert_eq!(p(local), Operand::Local(local.into()), "{local}");
        }
    }

    #[test]
    fn fleets_are_parsed_once_and_a_bad_one_is_refused() {
        let p = |s: &str| parse_operand(OsStr::new(s));
        assert_eq!(
            p("tag:Role=web:/srv").unwrap(),
            Operand::Remote {
                user: None,
                at: Where::Fleet(Fleet::Tag {
                    key: "Role".into(),
                    value: "web".into()
                }),
                path: b"/srv".to_vec(),
            }
        );
        assert!(p("i-12345678,nope:/srv").is_err());
    }

    fn request(args: &[&str]) -> Result<CopyRequest> {
        use clap::Parser;
        let cli =
            crate::cli::Cli::try_parse_from(std::iter::once("ssmcp").chain(args.iter().copied()))
                .map_err(|e| Error::usage(e.to_string()))?;
        CopyRequest::resolve(&cli.copy, false)
    }

    /// Every refusal in the table is reachable, and says what its row says.
    #[test]
    fn the_refusal_table_decides_what_each_transport_refuses() {
        let up = "i-12345678:/srv";
        let fleet_up = "i-12345678,i-12345679:/srv";
        let cases: [(&[&str], TransportKind, Option<&str>); 9] = [
            (&["--sync", "f", up], TransportKind::Stream, None),
            (
                &["f", fleet_up],
                TransportKind::Stream,
                Some("an upload to 2 instances goes through S3, not --transport stream"),
            ),
            (
                &["f", fleet_up],
                TransportKind::Pty,
                Some("an upload to 2 instances goes through S3, not --transport pty"),
            ),
            (
                &["--atomic", "f", up],
                TransportKind::Pty,
                Some("--atomic, --sync and --delete need"),
            ),
            (
                &["--dry-run", "i-12345678:/x", "d"],
                TransportKind::Pty,
                Some("--dry-run of a download"),
            ),
            (
                &["--dry-run", "i-12345678:/x", "d"],
                TransportKind::Stream,
                None,
            ),
            (
                &["--delete", "f", up],
                TransportKind::S3,
                Some("--sync and --delete need a session"),
            ),
            (
                &["--exclude", "*.o", "i-12345678:/x", "d"],
                TransportKind::S3,
                Some("--exclude and --dry-run are not supported"),
            ),
            (&["-r", "i-12345678:/x", "d"], TransportKind::S3, None),
        ];
        for (args, transport, refused) in cases {
            let r = request(args).unwrap();
            match (r.check(transport), refused) {
                (Ok(()), None) => {}
                (Err(e), Some(m)) => assert!(e.message.starts_with(m), "{args:?}: {}", e.message),
                (got, want) => panic!("{args:?} on {transport:?}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn auto_chooses_s3_only_for_big_uploads_with_a_bucket() {
        let big = AUTO_S3_BYTES;
        let r = request(&["--bucket", "b", "f", "i-12345678:/srv"]).unwrap();
        assert_eq!(r.choose(big).0, Choice::S3);
        assert_eq!(r.choose(big - 1).0, Choice::Stream { fallback: true });
        let r = request(&["--bucket", "b", "--sync", "f", "i-12345678:/srv"]).unwrap();
        assert_eq!(r.choose(big).0, Choice::Stream { fallback: true });
        let r = request(&["--transport", "stream", "f", "i-12345678:/srv"]).unwrap();
        assert_eq!(r.choose(0).0, Choice::Stream { fallback: false });
        let r = request(&["f", "tag:Role=web:/srv"]).unwrap();
        assert_eq!(r.choose(0).0, Choice::S3);
        let r = request(&["tag:Role=web:/srv", "d"]).unwrap();
        assert_eq!(r.choose(0).0, Choice::Stream { fallback: true });
        assert!(request(&["--sync", "i-12345678:/srv", "d"]).is_err());
    }
}
