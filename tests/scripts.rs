//! The shell scripts (issue #11, "the image"):
//! * every host-side script installs the tools it calls (`need_tools CMD:PACKAGE`, from
//!   `scripts/tools.sh`), as `build-image.sh` always did for its own: `check-image.sh` once
//!   stopped a build on a fresh machine with "needs cpio";
//! * no script reopens its own output (`tee /dev/stderr`): with `scripts/test.sh > test.log
//!   2>&1` that truncates the log, losing its start. Shown here on a two-line script first.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Commands that are not in every Debian install (beyond coreutils, util-linux, grep, sed,
/// awk, tar, gzip): a script that calls one must install it.
const NOT_BASE: [&str; 31] = [
    "cpio",
    "mdir",
    "mcopy",
    "mlabel",
    "fdtget",
    "fdtput",
    "dtc",
    "debugfs",
    "dumpe2fs",
    "e2fsck",
    "mkfs.ext4",
    "mkfs.vfat",
    "fsck.vfat",
    "sfdisk",
    "zstd",
    "xz",
    "file",
    "ssh",
    "scp",
    "ssh-keygen",
    "qemu-system-aarch64",
    "python3",
    "mmdebstrap",
    "tmux",
    "visudo",
    "gpsd",
    "gpsfake",
    "dpkg-deb",
    "systemd-analyze",
    "systemctl",
    "arch-test",
];

/// The commands a shell script runs: the first word of each simple command (after `|`, `;`,
/// `&&`, `||`, `$(`, `(`, a backquote, and keywords such as `if`/`then`/`!`), comments and
/// quoted strings aside. An approximation of the shell's grammar, good enough for these
/// scripts.
fn commands(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let l = line.trim_start();
        if l.starts_with('#') {
            continue;
        }
        // Drop single- and double-quoted text (commands inside strings are data).
        let mut code = String::new();
        let mut quote = None;
        for c in l.chars() {
            match (quote, c) {
                (None, '\'' | '"') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '#') if code.ends_with(' ') || code.is_empty() => break,
                (None, c) => code.push(c),
                _ => {}
            }
        }
        let code = code
            .replace("$(", ";")
            .replace("&&", ";")
            .replace("||", ";")
            .replace(['|', '(', ')', '`', '{', '}'], ";");
        for seg in code.split(';') {
            let mut words = seg.split_whitespace().peekable();
            while let Some(w) = words.peek() {
                let kw = matches!(
                    *w,
                    "if" | "then"
                        | "do"
                        | "else"
                        | "elif"
                        | "while"
                        | "until"
                        | "!"
                        | "time"
                        | "exec"
                        | "run"
                        | "xargs"
                        | "command"
                        | "sudo"
                        | "env"
                ) || w.contains('=');
                if kw {
                    words.next();
                } else {
                    break;
                }
            }
            if let Some(w) = words.next() {
                out.insert(w.to_owned());
            }
        }
    }
    out
}

/// The commands a script's `need_tools CMD:PACKAGE ...` calls cover (continuation lines too).
fn needed(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_call = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = l.split_whitespace().collect();
        let start = words.iter().position(|w| *w == "need_tools");
        if start.is_none() && !in_call {
            continue;
        }
        for w in &words[start.map_or(0, |i| i + 1)..] {
            if let Some((cmd, _pkg)) = w.split_once(':') {
                out.insert(cmd.to_owned());
            }
        }
        in_call = l.ends_with('\\');
    }
    out
}

/// Issue #11: each host-side script installs every non-base tool it calls (scripts it runs
/// for others are covered by their caller's list).
#[test]
fn every_script_installs_the_tools_it_calls() {
    // (script, scripts whose need_tools also cover it because they run it)
    let scripts: [(&str, &[&str]); 10] = [
        ("scripts/build-image.sh", &[]),
        ("scripts/hil-qemu.sh", &[]),
        ("scripts/deploy.sh", &[]),
        ("scripts/hil.sh", &[]),
        ("scripts/fuzz.sh", &[]),
        ("scripts/setup.sh", &[]),
        ("scripts/test.sh", &["scripts/setup.sh"]),
        ("image/check-image.sh", &[]),
        ("image/hil/build-i2c-stub.sh", &[]),
        ("image/dt/patch-rpi4b-dtb.sh", &["scripts/build-image.sh"]),
    ];
    let mut missing = Vec::new();
    for (script, callers) in scripts {
        let text = read(script);
        let used = commands(&text);
        let mut have = needed(&text);
        for c in callers {
            have.extend(needed(&read(c)));
        }
        // need_binfmt (image/lib.sh) installs qemu-user-static itself.
        for tool in NOT_BASE {
            let guarded = text.contains(&format!("command -v {tool} "));
            if used.contains(tool) && !have.contains(tool) && !guarded {
                missing.push(format!(
                    "{script} calls {tool} without need_tools {tool}:PACKAGE"
                ));
            }
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

/// The lint above sees what it must: check-image.sh as it was (a loop that only complained)
/// calls cpio without installing it.
#[test]
fn the_tool_lint_finds_a_missing_install() {
    let old = "for t in sfdisk:fdisk cpio:cpio; do\n    command -v \"${t%%:*}\" || die \"needs ${t%%:*}\"\ndone\n\
               (cd \"$tmp\" && zstd -dcq ../initrd | cpio -id --quiet)\n";
    let used = commands(old);
    assert!(used.contains("cpio") && used.contains("zstd"), "{used:?}");
    assert!(needed(old).is_empty());
    let fixed = format!("need_tools sfdisk:fdisk \\\n    cpio:cpio zstd:zstd\n{old}");
    assert_eq!(
        needed(&fixed),
        ["cpio", "sfdisk", "zstd"].map(String::from).into()
    );
}

/// Issue #11: `tee /dev/stderr` reopens the file behind stderr: with the output redirected to
/// a log (`> test.log 2>&1`) the reopen truncates it and the start of the log is lost. Printing
/// to the open stream keeps it. No script here reopens its own output.
#[test]
fn no_script_reopens_its_own_output() {
    let dir = tempfile::tempdir().unwrap();
    let run = |script: &str| -> String {
        let log = dir.path().join("test.log");
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!("{{ {script} ; }} > '{}' 2>&1", log.display()))
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::read_to_string(&log).unwrap()
    };
    let reopened = run("echo first step >&2; echo described | tee /dev/stderr >/dev/null");
    assert!(
        !reopened.contains("first step"),
        "tee /dev/stderr truncates the log: {reopened:?}"
    );
    let streamed = run("echo first step >&2; d=$(echo described); printf '%s\\n' \"$d\" >&2");
    assert_eq!(streamed, "first step\ndescribed\n");

    let mut offenders = Vec::new();
    for dir in [
        "scripts",
        "image",
        "image/hil",
        "image/hil/guest",
        "image/dt",
        "image/base",
    ] {
        for e in std::fs::read_dir(repo().join(dir)).unwrap().flatten() {
            let p = e.path();
            if !p.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            for (i, line) in text.lines().enumerate() {
                let code = line.split(" #").next().unwrap_or("");
                if line.trim_start().starts_with('#') {
                    continue;
                }
                for dev in ["/dev/stderr", "/dev/stdout", "/dev/fd/1", "/dev/fd/2"] {
                    if code.contains(dev) {
                        offenders.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}
