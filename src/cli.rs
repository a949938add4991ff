//! Command-line definitions only; commands/ decides what they mean.

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "ssmcp",
    version,
    about = "Copy files and forward ports to EC2 and hybrid instances through AWS Systems Manager, without SSH",
    override_usage = "ssmcp [OPTIONS] SRC... DEST\n       ssmcp forward TARGET [LOCAL:]REMOTE_PORT\n       ssmcp exec TARGET -- COMMAND...\n       ssmcp doctor TARGET [--bucket BUCKET]\n       ssmcp proxy TARGET [PORT]   (an ssh ProxyCommand)\n       ssmcp ssh-config\n       ssmcp gc [--dry-run]",
    after_help = "Remote paths are [user@]TARGET:PATH, TARGET being i-…, mi-…, i-….REGION[.PROFILE] or name:NAME (the Name tag).\nAn upload can go to several instances at once (s3 transport): i-a,i-b:PATH or tag:KEY=VALUE:PATH.\nRelative remote paths and ~ are under the remote user's home. A source directory written with a trailing / copies its contents.",
    propagate_version = true,
    subcommand_precedence_over_arg = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(flatten)]
    pub copy: CopyArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `ssmcp [OPTIONS] SRC… DEST`, scp's flags where scp has them. Every flag can also
/// come from an `SSMCP_*` variable (a flag on the command line wins); switches read
/// what CI systems write: true/false, 1/0, yes/no, on/off.
#[derive(Args, Debug, Default)]
pub struct CopyArgs {
    /// Sources then the destination; either side may be remote ([user@]TARGET:PATH).
    #[arg(value_name = "SRC... DEST", num_args = 2.., required = true)]
    pub paths: Vec<std::ffi::OsString>,
    /// Copy directories recursively.
    #[arg(short = 'r', long, env = "SSMCP_RECURSIVE", value_parser = clap::builder::BoolishValueParser::new())]
    pub recursive: bool,
    /// Preserve modes and modification times.
    #[arg(short = 'p', long, env = "SSMCP_PRESERVE", value_parser = clap::builder::BoolishValueParser::new())]
    pub preserve: bool,
    /// Compress the data on the wire (zlib; stream transport).
    #[arg(short = 'C', long, env = "SSMCP_COMPRESS", value_parser = clap::builder::BoolishValueParser::new())]
    pub compress: bool,
    /// Limit the bandwidth, in Kbit/s (as scp's -l).
    #[arg(short = 'l', long, value_name = "KBITS", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT_KBITS), env = "SSMCP_LIMIT")]
    pub limit: Option<u64>,
    /// Leave out files and directories matching this glob (name or relative path); repeatable.
    #[arg(
        long,
        value_name = "PATTERN",
        env = "SSMCP_EXCLUDE",
        value_delimiter = '\n'
    )]
    pub exclude: Vec<String>,
    /// Send only files whose content differs from the destination's (SHA-256 of
    /// same-size files compared on both sides); nothing is removed unless --delete.
    #[arg(long, env = "SSMCP_SYNC", value_parser = clap::builder::BoolishValueParser::new())]
    pub sync: bool,
    /// Remove from the destination trees what the sources do not have (as rsync
    /// --delete); only inside directories this copy writes.
    #[arg(long, env = "SSMCP_DELETE", value_parser = clap::builder::BoolishValueParser::new())]
    pub delete: bool,
    /// Print what would be copied, copy nothing.
    #[arg(long, env = "SSMCP_DRY_RUN", value_parser = clap::builder::BoolishValueParser::new())]
    pub dry_run: bool,
    /// Build each copied directory tree beside its destination and swap it in at the end,
    /// so the tree appears at once (replacing what was there).
    #[arg(long, env = "SSMCP_ATOMIC", value_parser = clap::builder::BoolishValueParser::new())]
    pub atomic: bool,
    /// On the instance, read and write as root through `sudo -n` (user@TARGET:PATH picks another user).
    #[arg(long, env = "SSMCP_SUDO", value_parser = clap::builder::BoolishValueParser::new())]
    pub sudo: bool,
    /// Port sessions to stripe a download over, at most (the agent paces each one to
    /// ~1 MB/s). Default: one per 512 KiB of data, up to 8.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=16), env = "SSMCP_PARALLEL")]
    pub parallel: Option<u16>,
    /// One JSON event per line on stdout: plan, progress, file, summary, error.
    #[arg(long, env = "SSMCP_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub json: bool,
    /// How the bytes travel: `stream` (python3 receiver + port sessions), `pty` (base64
    /// through a terminal; slower, needs no python3), `s3` (staged in --bucket, pulled by
    /// the instances through Run Command), or `auto`: s3 for several targets or, with a
    /// bucket configured, a large upload; otherwise stream, falling back to pty when the
    /// instance has no python3.
    #[arg(long, value_enum, default_value_t = TransportChoice::Auto, env = "SSMCP_TRANSPORT")]
    pub transport: TransportChoice,
    #[command(flatten)]
    pub staging: StagingArgs,
    /// Instances copying at once, a number or a percentage such as 10%: Run Command's
    /// rate control for uploads through S3, ssmcp's own for downloads from several.
    #[arg(long, default_value = "10", value_name = "N|P%", value_parser = rate(1), env = "SSMCP_MAX_CONCURRENCY")]
    pub max_concurrency: String,
    /// Failed instances tolerated before the rest are not started, a number or a
    /// percentage (several targets). The copy still exits non-zero if any failed.
    #[arg(long, default_value = "0", value_name = "N|P%", value_parser = rate(0), env = "SSMCP_MAX_ERRORS")]
    pub max_errors: String,
    /// Encrypt staged objects with this KMS key (id, ARN or alias/NAME): SSE-KMS. The
    /// caller needs kms:GenerateDataKey and kms:Decrypt on it; instances need nothing.
    #[arg(long, value_name = "KEY", env = "SSMCP_SSE_KMS_KEY")]
    pub sse_kms_key: Option<String>,
}

/// -l's ceiling: 1 Tbit/s, far beyond any session, and small enough that the conversion
/// to bytes per second cannot overflow.
pub const MAX_LIMIT_KBITS: u64 = 1_000_000_000;

/// `N` (at least `min`) or `P%` (`min`..=100), as Run Command's MaxConcurrency and
/// MaxErrors take them; checked here so a typo is a usage error, not a service refusal.
fn rate(min: u64) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |s: &str| {
        let (digits, max) = match s.strip_suffix('%') {
            Some(p) => (p, 100),
            None => (s, u64::MAX),
        };
        match digits.parse::<u64>() {
            Ok(n) if n >= min && n <= max && !digits.starts_with('+') => Ok(s.to_string()),
            _ => Err(format!(
                "expected a number of at least {min} or a percentage from {min}% to 100%, such as 10 or 25%"
            )),
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportChoice {
    #[default]
    Auto,
    Stream,
    Pty,
    S3,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// AWS region (default: from the profile or AWS_REGION).
    #[arg(long, global = true, env = "AWS_REGION", hide_env_values = true)]
    pub region: Option<String>,
    /// Named profile from the AWS config files, SSO profiles included.
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Override the SSM endpoint (AWS_ENDPOINT_URL_SSM works too).
    #[arg(long, global = true)]
    pub endpoint_url: Option<String>,
    /// More detail on stderr (-vv for protocol debugging).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, env = "SSMCP_QUIET", value_parser = clap::builder::BoolishValueParser::new())]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Forward a local TCP port to a port on (or reachable from) the instance.
    Forward(ForwardArgs),
    /// Run a command on the instance, stream its output and exit with its status.
    Exec(ExecArgs),
    /// An ssh ProxyCommand: join stdin and stdout to PORT on the instance
    /// (`ssh -o ProxyCommand='ssmcp proxy %h %p' ec2-user@i-…`).
    Proxy(ProxyArgs),
    /// Print a ~/.ssh/config block that reaches instances through `ssmcp proxy`.
    SshConfig(SshConfigArgs),
    /// Print shell completions: `ssmcp completions bash > /etc/bash_completion.d/ssmcp`.
    Completions(CompletionsArgs),
    /// Print the man page (roff): `ssmcp man > ~/.local/share/man/man1/ssmcp.1`.
    Man,
    /// Check credentials, IAM, the instance, its agent and sessions before a copy needs them.
    Doctor(DoctorArgs),
    /// Remove what S3 copies that were killed left in their bucket (from ssmcp's journal).
    Gc(GcArgs),
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// List what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// i-…, mi-…, i-….REGION[.PROFILE] or name:NAME
    pub target: String,
    /// One JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// With --bucket, also check the staging bucket: reachable, its region, and whether
    /// the instance can download from it.
    #[command(flatten)]
    pub staging: StagingArgs,
}

/// Where the s3 transport (and doctor's S3 checks) stage objects.
#[derive(Args, Debug, Default, Clone)]
pub struct StagingArgs {
    /// S3 bucket to stage copies in (s3 transport); objects are removed afterwards.
    #[arg(long, env = "SSMCP_BUCKET", value_name = "BUCKET")]
    pub bucket: Option<String>,
    /// Key prefix for staged objects in --bucket.
    #[arg(long, env = "SSMCP_PREFIX", value_name = "PREFIX", default_value = "")]
    pub prefix: String,
    /// The bucket's region; found by asking S3 when not given.
    #[arg(long, value_name = "REGION", env = "SSMCP_BUCKET_REGION")]
    pub bucket_region: Option<String>,
}

#[derive(Args, Debug)]
pub struct ForwardArgs {
    /// i-…, mi-…, or i-….REGION[.PROFILE]
    pub target: String,
    /// [LOCAL_PORT:]REMOTE_PORT; LOCAL_PORT 0 or absent picks a free port.
    pub ports: String,
    /// Forward to this host as seen from the instance
    /// (AWS-StartPortForwardingSessionToRemoteHost).
    #[arg(long)]
    pub remote_host: Option<String>,
    /// Local address to listen on.
    #[arg(long, default_value = "127.0.0.1", env = "SSMCP_FORWARD_BIND")]
    pub bind: String,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// i-…, mi-…, i-….REGION[.PROFILE] or name:NAME
    pub target: String,
    /// The port on the instance.
    #[arg(default_value_t = 22)]
    pub port: u16,
    /// The session document: AWS-StartSSHSession (what most IAM policies grant for
    /// ssh) or another port-forwarding document such as AWS-StartPortForwardingSession.
    #[arg(
        long,
        default_value = "AWS-StartSSHSession",
        env = "SSMCP_PROXY_DOCUMENT"
    )]
    pub document: String,
}

#[derive(Args, Debug)]
pub struct SshConfigArgs {
    /// The ssmcp to run from the ProxyCommand (default: this one's full path).
    #[arg(long, value_name = "PATH")]
    pub ssmcp: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// i-…, mi-…, or i-….REGION[.PROFILE]
    pub target: String,
    /// Run it in a terminal (for commands that need one): stderr merged into stdout,
    /// ^C as a keystroke, stdin not forwarded. Without -t, as `ssh host cmd`: stdout and
    /// stderr apart and byte-exact, stdin forwarded (python3 on the instance runs it;
    /// without python3 ssmcp falls back to -t with a warning).
    #[arg(short = 't', long = "tty", env = "SSMCP_EXEC_TTY", value_parser = clap::builder::BoolishValueParser::new())]
    pub tty: bool,
    /// Do not read stdin: the command gets end-of-file at once (as ssh -n).
    #[arg(short = 'n', long = "no-stdin", env = "SSMCP_EXEC_NO_STDIN", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_stdin: bool,
    /// Use your own NonInteractiveCommands session document that sets
    /// separateOutputStream: stderr stays separate and the agent reports the exit code
    /// (no stdin). Default: AWS-StartInteractiveCommand.
    #[arg(long, env = "SSMCP_EXEC_DOCUMENT")]
    pub document: Option<String>,
    /// The command and its arguments, joined by spaces and run by the remote sh, as ssh
    /// does: quote what the remote shell should see, e.g. -- 'grep "a b" /etc/hosts'.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Advice below the command line names flags through `error::Flag`: each must be a
    /// long flag of some subcommand (or a global one).
    #[test]
    fn every_flag_advice_names_exists() {
        use clap::CommandFactory;
        fn flags(c: &clap::Command, into: &mut Vec<(Option<String>, Option<char>)>) {
            into.extend(
                c.get_arguments()
                    .map(|a| (a.get_long().map(str::to_string), a.get_short())),
            );
            for sub in c.get_subcommands() {
                flags(sub, into);
            }
        }
        let mut all = Vec::new();
        flags(&Cli::command(), &mut all);
        for flag in crate::error::Flag::ALL {
            let long = Some(flag.long().to_string());
            assert!(
                all.iter()
                    .any(|(l, short)| *l == long && flag.short().is_none_or(|c| *short == Some(c))),
                "{flag} (--{}) is not a flag of ssmcp",
                flag.long()
            );
        }
    }

    #[test]
    fn global_flags_may_precede_a_subcommand() {
        let cli = Cli::try_parse_from([
            "ssmcp",
            "-v",
            "--region",
            "x",
            "exec",
            "i-12345678",
            "--",
            "true",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Exec(_))));
        let cli = Cli::try_parse_from(["ssmcp", "-rp", "a", "i-12345678:b"]).unwrap();
        assert!(cli.command.is_none());
        assert!(cli.copy.recursive && cli.copy.preserve);
        assert_eq!(cli.copy.paths.len(), 2);
        assert!(Cli::try_parse_from(["ssmcp", "only-one"]).is_err());
    }

    /// Every flag a copy takes can come from the environment, named after the flag
    /// (`--max-errors` → `SSMCP_MAX_ERRORS`); subcommands' flags carry the subcommand's
    /// name. AWS's own settings keep AWS's names (the SDK reads AWS_PROFILE and
    /// AWS_ENDPOINT_URL_SSM itself); -v counts and has none.
    #[test]
    fn flags_are_named_alike_in_the_environment() {
        use clap::CommandFactory;
        let root = Cli::command();
        let aws_named = [
            "region",
            "profile",
            "endpoint-url",
            "verbose",
            "help",
            "version",
        ];
        let mut checked = 0;
        for a in root.get_arguments() {
            let Some(long) = a.get_long() else { continue };
            if aws_named.contains(&long) {
                continue;
            }
            let want = format!("SSMCP_{}", long.replace('-', "_").to_uppercase());
            assert_eq!(
                a.get_env().and_then(|e| e.to_str()),
                Some(want.as_str()),
                "--{long}"
            );
            checked += 1;
        }
        assert!(checked >= 17, "{checked}");
        for (sub, long) in [
            ("exec", "document"),
            ("proxy", "document"),
            ("forward", "bind"),
        ] {
            let cmd = root.find_subcommand(sub).unwrap();
            let a = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .unwrap();
            let want = format!("SSMCP_{}_{}", sub.to_uppercase(), long.to_uppercase());
            assert_eq!(a.get_env().and_then(|e| e.to_str()), Some(want.as_str()));
        }
    }
}
