//! Completions and the man page, generated from the clap definitions, used as a user
//! would: bash sources the completions and completes, `man` renders the page.

use std::process::Command;

fn ssmcp(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ssmcp"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What bash completes for the words typed so far (the last one being completed), with
/// `ssmcp completions bash` sourced as a user's bashrc would.
fn complete(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let program = format!(
        "source {script}\n\
         complete -p ssmcp >/dev/null || exit 9\n\
         COMP_WORDS=({words})\n\
         COMP_CWORD={cword}\n\
         COMP_LINE='{line}'\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         _ssmcp ssmcp '{cur}' '{prev}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script = script.display(),
        words = words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        cword = words.len() - 1,
        cur = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_subcommands_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("ssmcp.bash");
    std::fs::write(&script, ssmcp(&["completions", "bash"])).unwrap();
    let got = complete(&script, &["ssmcp", "pro"]);
    assert_eq!(got, ["proxy"]);
    let got = complete(&script, &["ssmcp", "ex"]);
    assert_eq!(got, ["exec"]);
    let got = complete(&script, &["ssmcp", "--para"]);
    assert_eq!(got, ["--parallel"]);
    let got = complete(&script, &["ssmcp", "proxy", "--doc"]);
    assert_eq!(got, ["--document"]);
    let got = complete(&script, &["ssmcp", "completions", "z"]);
    assert_eq!(got, ["zsh"]);
}

#[test]
fn every_shell_gets_its_completions() {
    for (shell, marker) in [
        ("zsh", "#compdef ssmcp"),
        ("fish", "complete -c ssmcp"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let text = ssmcp(&["completions", shell]);
        assert!(text.contains(marker), "{shell}: {text}");
        assert!(text.contains("proxy"), "{shell}");
    }
}

/// `man ./ssmcp.1` renders, with every subcommand's section and the copy flags.
#[test]
fn the_man_page_renders() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("ssmcp.1");
    std::fs::write(&page, ssmcp(&["man"])).unwrap();
    let out = Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(&page)
        .env("MANWIDTH", "100")
        .output()
        .expect("man runs (man-db; scripts/test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "NAME",
        "SYNOPSIS",
        "--parallel",
        "--recursive",
        "SSMCP FORWARD",
        "SSMCP EXEC",
        "SSMCP PROXY",
        "SSMCP DOCTOR",
        "SSMCP GC",
    ] {
        assert!(text.contains(needle), "no {needle} in:\n{text}");
    }
    // roff renders warnings to stderr for malformed input.
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}
